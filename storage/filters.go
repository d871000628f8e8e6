package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
)

// PutFilter stores a filter (already canonical JSON) and returns its ID.
// An identical filter of the same user gets the same ID back.
func (o ops) PutFilter(ctx context.Context, localpart string, filterJSON []byte) (int64, error) {
	sum := sha256.Sum256(filterJSON)
	hash := hex.EncodeToString(sum[:])
	// Two concurrent inserts can pick the same next ID; the loser retries.
	for range 3 {
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
