package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
)

// AccountData is one account data entry; RoomID is empty for global data.
type AccountData struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData stores content under (room, type) at stream position pos,
// reserved by the caller from the stream (see internal/stream).
func (o ops) PutAccountData(ctx context.Context, localpart, roomID, typ string, content json.RawMessage, pos int64) error {
	_, err := o.q.exec(ctx, `INSERT INTO accounts_account_data (localpart, room_id, type, content_json, stream_pos)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (localpart, room_id, type) DO UPDATE SET content_json = excluded.content_json, stream_pos = excluded.stream_pos`,
		localpart, roomID, typ, string(content), pos)
	return err
}

// AccountDataEntry returns one entry's content, or ErrNotFound.
func (o ops) AccountDataEntry(ctx context.Context, localpart, roomID, typ string) (json.RawMessage, error) {
	var content string
	err := o.q.queryRow(ctx, `SELECT content_json FROM accounts_account_data WHERE localpart = $1 AND room_id = $2 AND type = $3`,
		localpart, roomID, typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return json.RawMessage(content), err
}

// AccountDataSince returns the entries changed after stream position since
// and up to upTo, oldest first.
func (o ops) AccountDataSince(ctx context.Context, localpart string, since, upTo int64) ([]AccountData, error) {
	rows, err := o.q.query(ctx, `SELECT room_id, type, content_json, stream_pos FROM accounts_account_data
		WHERE localpart = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, localpart, since, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var d AccountData
		var content string
		if err := rows.Scan(&d.RoomID, &d.Type, &content, &d.StreamPos); err != nil {
			return nil, err
		}
		d.Content = json.RawMessage(content)
		out = append(out, d)
	}
	return out, rows.Err()
}
