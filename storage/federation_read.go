package storage

import (
	"context"
	"database/sql"
	"strings"

	"github.com/veche/veche/config"
)

// Queries behind the federation read endpoints (another server reading a
// room's history) and behind backfill (this server reading history from
// others).

// MinStreamPos is the lowest stream position any event holds, or 0 when
// none is below 1. Backfilled history takes positions below it, so that
// sync, which reads forwards from a positive position, never returns it.
func (o ops) MinStreamPos(ctx context.Context) (int64, error) {
	var pos sql.NullInt64
	if err := o.q.queryRow(ctx, `SELECT MIN(stream_pos) FROM rooms_events`).Scan(&pos); err != nil {
		return 0, err
	}
	return min(pos.Int64, 0), nil
}

// MissingPrevEvents returns the prev events of the given events that have
// no place in the room's DAG here: unknown, or known only as outliers.
// Each is listed once, in no particular order. They are where the history
// this server holds stops and backfill can continue.
func (o ops) MissingPrevEvents(ctx context.Context, eventNIDs []int64) ([]string, error) {
	if len(eventNIDs) == 0 {
		return nil, nil
	}
	rows, err := o.q.query(ctx, `SELECT DISTINCT g.prev_event_id FROM rooms_event_edges g
		LEFT JOIN rooms_events p ON p.event_id = g.prev_event_id
		WHERE g.event_nid IN `+o.inList("$1", "bigint")+` AND (p.event_nid IS NULL OR p.status = 3)
		ORDER BY g.prev_event_id`, jsonList(eventNIDs))
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// SnapshotMembersOf returns the m.room.member entries of a snapshot whose
// user IDs belong to server: user ID → event NID.
func (o ops) SnapshotMembersOf(ctx context.Context, snapshotNID int64, server string) (map[string]int64, error) {
	out := map[string]int64{}
	if snapshotNID == 0 {
		return out, nil
	}
	rows, err := o.q.query(ctx, snapshotChain+`
		SELECT e.state_key, e.event_nid FROM chain JOIN rooms_state_entries e ON e.snapshot_nid = chain.nid
		WHERE e.type = 'm.room.member' ORDER BY chain.depth DESC`, snapshotNID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	suffix := ":" + server
	for rows.Next() {
		var user string
		var nid int64
		if err := rows.Scan(&user, &nid); err != nil {
			return nil, err
		}
		// The server name is everything after the first colon.
		if i := strings.IndexByte(user, ':'); i < 0 || user[i:] != suffix {
			continue
		}
		// Rows come root first, so later (closer) entries override.
		if nid == 0 {
			delete(out, user)
		} else {
			out[user] = nid
		}
	}
	return out, rows.Err()
}

// RedactionsOf returns the room's accepted redactions of any of the given
// events. The target is content.redacts from room version 11 on, the
// top-level redacts before.
func (o ops) RedactionsOf(ctx context.Context, roomNID int64, eventIDs []string) ([]EventRow, error) {
	if len(eventIDs) == 0 {
		return nil, nil
	}
	target := `COALESCE(json_extract(json, '$.content.redacts'), json_extract(json, '$.redacts'))`
	if o.backend == config.Postgres {
		target = `COALESCE(json::json->'content'->>'redacts', json::json->>'redacts')`
	}
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE room_nid = $1
		AND type = 'm.room.redaction' AND stream_pos IS NOT NULL AND status = 0
		AND `+target+` IN `+o.inList("$2", "text")+` ORDER BY stream_pos`, roomNID, jsonList(eventIDs)))
}
