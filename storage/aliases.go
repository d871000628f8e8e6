package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Alias is a row of rooms_aliases.
type Alias struct {
	Alias, RoomID, Creator string
}

// PutAlias maps an alias to a room; ErrConflict when it is taken.
func (o ops) PutAlias(ctx context.Context, alias, roomID, creator string, ts int64) error {
	res, err := o.q.exec(ctx, `INSERT INTO rooms_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (alias) DO NOTHING`, alias, roomID, creator, ts)
	return insertedOne(res, err)
}

// AliasByName resolves an alias, or ErrNotFound.
func (o ops) AliasByName(ctx context.Context, alias string) (Alias, error) {
	var a Alias
	err := o.q.queryRow(ctx, `SELECT alias, room_id, creator FROM rooms_aliases WHERE alias = $1`, alias).Scan(&a.Alias, &a.RoomID, &a.Creator)
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

// DeleteAlias removes an alias; ErrNotFound if it did not exist.
func (o ops) DeleteAlias(ctx context.Context, alias string) error {
	return expectOne(o.q.exec(ctx, `DELETE FROM rooms_aliases WHERE alias = $1`, alias))
}

// AliasesOfRoom lists a room's local aliases.
func (o ops) AliasesOfRoom(ctx context.Context, roomID string) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT alias FROM rooms_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}
