package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
)

const maxFilterAttempts = 100

// PutFilter stores a filter (already canonical JSON) and returns its ID.
// An identical filter of the same user gets the same ID back.
func (o ops) PutFilter(ctx context.Context, localpart string, filterJSON []byte) (int64, error) {
	sum := sha256.Sum256(filterJSON)
	hash := hex.EncodeToString(sum[:])
	// Concurrent inserts can pick the same next ID; the losers retry. Each
	// lost round means another filter of this user was stored, so the loop
	// makes progress, but N clients racing need up to N rounds: the bound
	// only guards against a bug looping forever.
	for range maxFilterAttempts {
		var id int64
		err := o.q.writeRow(ctx, `SELECT filter_id FROM accounts_filters WHERE localpart = $1 AND filter_hash = $2`, localpart, hash).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
		err = o.q.writeRow(ctx, `INSERT INTO accounts_filters (localpart, filter_id, filter_json, filter_hash)
			SELECT $1, COALESCE(MAX(filter_id), -1) + 1, $2, $3 FROM accounts_filters WHERE localpart = $1
			ON CONFLICT DO NOTHING RETURNING filter_id`, localpart, string(filterJSON), hash).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("storage: could not allocate a filter ID")
}

// Filter returns a stored filter's JSON, or ErrNotFound.
func (o ops) Filter(ctx context.Context, localpart string, filterID int64) ([]byte, error) {
	var f string
	err := o.q.queryRow(ctx, `SELECT filter_json FROM accounts_filters WHERE localpart = $1 AND filter_id = $2`, localpart, filterID).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(f), err
}
