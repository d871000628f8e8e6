package storage

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/veche/veche/config"
)

// Bulk writes: a join stores tens of thousands of state events, and one
// statement per row costs a round trip each on PostgreSQL. Rows travel
// as one JSON array parameter per batch, read back as a table by
// json_each (SQLite) or json_array_elements (PostgreSQL).

// bulkBatch bounds the rows of one bulk statement.
const bulkBatch = 1000

// bulkColumn is one column of a JSON row: its key and SQL type.
type bulkColumn struct {
	key, kind string // kind: text or bigint
}

// jsonRows is "SELECT <columns> FROM <the rows of param>" for the
// backend, with the columns in order.
func (o ops) jsonRows(param string, cols []bulkColumn) string {
	exprs := make([]string, len(cols))
	for i, c := range cols {
		if o.backend == config.SQLite {
			exprs[i] = "json_extract(value, '$." + c.key + "')"
		} else if c.kind == "bigint" {
			exprs[i] = "(value->>'" + c.key + "')::bigint"
		} else {
			exprs[i] = "value->>'" + c.key + "'"
		}
	}
	if o.backend == config.SQLite {
		return "SELECT " + strings.Join(exprs, ", ") + " FROM json_each(" + param + ") WHERE true"
	}
	return "SELECT " + strings.Join(exprs, ", ") + " FROM json_array_elements(" + param + "::json) AS t(value)"
}

// inBatches calls fn with consecutive slices of at most bulkBatch items.
func inBatches[T any](items []T, fn func([]T) error) error {
	for start := 0; start < len(items); start += bulkBatch {
		if err := fn(items[start:min(start+bulkBatch, len(items))]); err != nil {
			return err
		}
	}
	return nil
}

type stateEntryRow struct {
	T string `json:"t"`
	K string `json:"k"`
	N int64  `json:"n"`
}

// insertStateEntries writes a snapshot's entries in bulk.
func (o ops) insertStateEntries(ctx context.Context, snapshotNID int64, entries []StateEntry) error {
	q := `INSERT INTO rooms_state_entries (snapshot_nid, type, state_key, event_nid) SELECT CAST($1 AS BIGINT), * FROM (` +
		o.jsonRows("$2", []bulkColumn{{"t", "text"}, {"k", "text"}, {"n", "bigint"}}) + `) AS r`
	return inBatches(entries, func(batch []StateEntry) error {
		rows := make([]stateEntryRow, len(batch))
		for i, e := range batch {
			rows[i] = stateEntryRow{e.Type, e.StateKey, e.EventNID}
		}
		js, _ := json.Marshal(rows)
		_, err := o.q.exec(ctx, q, snapshotNID, string(js))
		return err
	})
}

type outlierRow struct {
	ID       string  `json:"id"`
	Type     string  `json:"type"`
	StateKey *string `json:"sk"`
	Sender   string  `json:"sender"`
	Depth    int64   `json:"depth"`
	TS       int64   `json:"ts"`
	Status   int     `json:"status"`
	Reason   *string `json:"reason"`
	Rel      *string `json:"rel"`
	RelType  *string `json:"reltype"`
	JSON     string  `json:"json"`
}

// InsertOutliers stores events without a place in the DAG or the stream
// (outliers, or rejected ones) in bulk, skipping events already stored,
// and returns the numeric IDs of those it stored by event ID.
func (o ops) InsertOutliers(ctx context.Context, roomNID int64, events []EventRow) (map[string]int64, error) {
	q := `INSERT INTO rooms_events (room_nid, event_id, type, state_key, sender, depth, origin_server_ts, status,
			rejection_reason, relates_to, rel_type, json)
		SELECT CAST($1 AS BIGINT), * FROM (` + o.jsonRows("$2", []bulkColumn{{"id", "text"}, {"type", "text"}, {"sk", "text"}, {"sender", "text"},
		{"depth", "bigint"}, {"ts", "bigint"}, {"status", "bigint"}, {"reason", "text"}, {"rel", "text"}, {"reltype", "text"},
		{"json", "text"}}) + `) AS r ON CONFLICT (event_id) DO NOTHING RETURNING event_nid, event_id`
	if o.backend == config.SQLite {
		// SQLite reads "ON CONFLICT" after a subquery as part of a join
		// unless the SELECT has a WHERE clause.
		q = strings.Replace(q, ") AS r ON CONFLICT", ") AS r WHERE true ON CONFLICT", 1)
	}
	out := make(map[string]int64, len(events))
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	err := inBatches(events, func(batch []EventRow) error {
		rows := make([]outlierRow, len(batch))
		for i, e := range batch {
			rows[i] = outlierRow{ID: e.EventID, Type: e.Type, StateKey: e.StateKey, Sender: e.Sender, Depth: e.Depth,
				TS: e.OriginServerTS, Status: e.Status, Reason: opt(e.RejectionReason), Rel: opt(e.RelatesTo), RelType: opt(e.RelType),
				JSON: string(e.JSON)}
		}
		js, _ := json.Marshal(rows)
		res, err := o.q.query(ctx, q, roomNID, string(js))
		if err != nil {
			return err
		}
		defer res.Close()
		for res.Next() {
			var nid int64
			var id string
			if err := res.Scan(&nid, &id); err != nil {
				return err
			}
			out[id] = nid
		}
		return res.Err()
	})
	return out, err
}

type currentStateRow struct {
	T string  `json:"t"`
	K string  `json:"k"`
	N int64   `json:"n"`
	M *string `json:"m"`
}

// upsertCurrentState writes many current state entries at once.
func (o ops) upsertCurrentState(ctx context.Context, roomNID int64, changes []CurrentStateChange) error {
	q := `INSERT INTO rooms_current_state (room_nid, type, state_key, event_nid, membership)
		SELECT CAST($1 AS BIGINT), * FROM (` + o.jsonRows("$2", []bulkColumn{{"t", "text"}, {"k", "text"}, {"n", "bigint"}, {"m", "text"}}) + `) AS r
		ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`
	if o.backend == config.SQLite {
		q = strings.Replace(q, ") AS r\n", ") AS r WHERE true\n", 1)
	}
	return inBatches(changes, func(batch []CurrentStateChange) error {
		rows := make([]currentStateRow, len(batch))
		for i, c := range batch {
			rows[i] = currentStateRow{T: c.Type, K: c.StateKey, N: c.EventNID}
			if c.Membership != "" {
				m := c.Membership
				rows[i].M = &m
			}
		}
		js, _ := json.Marshal(rows)
		_, err := o.q.exec(ctx, q, roomNID, string(js))
		return err
	})
}
