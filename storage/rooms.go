package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"

	"github.com/veche/veche/config"
)

// Room is a row of rooms_rooms.
type Room struct {
	NID        int64
	RoomID     string
	Version    string
	CreatedTS  int64
	StateNID   int64
	Visibility string
}

// Event status values of rooms_events.status.
const (
	EventAccepted   = 0
	EventSoftFailed = 1
	EventRejected   = 2
	EventOutlier    = 3
)

// EventRow is a row of rooms_events.
type EventRow struct {
	NID             int64
	RoomNID         int64
	EventID         string
	Type            string
	StateKey        *string
	Sender          string
	Depth           int64
	OriginServerTS  int64
	StreamPos       int64 // 0: not in the stream; negative: backfilled history, below it
	StateBeforeNID  int64
	StateAfterNID   int64
	Status          int
	RejectionReason string
	RedactedBy      string
	ReplacesNID     int64
	RelatesTo       string
	RelType         string
	JSON            []byte
}

// inList is a subquery yielding the elements of a JSON array parameter,
// the portable way to pass a list: SQLite reads it with json_each,
// PostgreSQL with json_array_elements_text. kind is "bigint" or "text".
func (o ops) inList(param, kind string) string {
	if o.backend == config.SQLite {
		return "(SELECT value FROM json_each(" + param + "))"
	}
	return "(SELECT value::" + kind + " FROM json_array_elements_text(" + param + "::json) AS t(value))"
}

func jsonList[T any](v []T) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// CreateRoom inserts a room and returns its numeric ID; ErrConflict when
// the room ID exists.
func (o ops) CreateRoom(ctx context.Context, roomID, version string, ts int64) (int64, error) {
	var nid int64
	err := o.q.writeRow(ctx, `INSERT INTO rooms_rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING RETURNING room_nid`, roomID, version, ts).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrConflict
	}
	return nid, err
}

const roomColumns = `room_nid, room_id, room_version, created_ts, state_nid, visibility`

func scanRoom(sc interface{ Scan(...any) error }) (Room, error) {
	var r Room
	err := sc.Scan(&r.NID, &r.RoomID, &r.Version, &r.CreatedTS, &r.StateNID, &r.Visibility)
	if errors.Is(err, sql.ErrNoRows) {
		return Room{}, ErrNotFound
	}
	return r, err
}

// RoomByID returns a room, or ErrNotFound.
func (o ops) RoomByID(ctx context.Context, roomID string) (Room, error) {
	return scanRoom(o.q.queryRow(ctx, `SELECT `+roomColumns+` FROM rooms_rooms WHERE room_id = $1`, roomID))
}

// RoomByNID returns a room, or ErrNotFound.
func (o ops) RoomByNID(ctx context.Context, nid int64) (Room, error) {
	return scanRoom(o.q.queryRow(ctx, `SELECT `+roomColumns+` FROM rooms_rooms WHERE room_nid = $1`, nid))
}

// SetRoomState records the room's current state snapshot.
func (o ops) SetRoomState(ctx context.Context, roomNID, stateNID int64) error {
	return expectOne(o.q.exec(ctx, `UPDATE rooms_rooms SET state_nid = $1 WHERE room_nid = $2`, stateNID, roomNID))
}

// SetRoomVisibility publishes ("public") or hides ("private") a room in
// the directory.
func (o ops) SetRoomVisibility(ctx context.Context, roomNID int64, visibility string) error {
	return expectOne(o.q.exec(ctx, `UPDATE rooms_rooms SET visibility = $1 WHERE room_nid = $2`, visibility, roomNID))
}

// InsertEvent stores an event and returns its numeric ID. An event that is
// already stored returns ErrConflict.
func (o ops) InsertEvent(ctx context.Context, e *EventRow) (int64, error) {
	var nid int64
	err := o.q.writeRow(ctx, `INSERT INTO rooms_events (room_nid, event_id, type, state_key, sender, depth, origin_server_ts,
			stream_pos, state_before_nid, state_after_nid, status, rejection_reason, relates_to, rel_type, replaces_nid, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		ON CONFLICT (event_id) DO NOTHING RETURNING event_nid`,
		e.RoomNID, e.EventID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, nullInt(e.StreamPos),
		e.StateBeforeNID, e.StateAfterNID, e.Status, nullString(e.RejectionReason), nullString(e.RelatesTo), nullString(e.RelType),
		e.ReplacesNID, string(e.JSON)).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrConflict
	}
	e.NID = nid
	return nid, err
}

// InsertEdges records an event's prev_events.
func (o ops) InsertEdges(ctx context.Context, eventNID int64, prevEventIDs []string) error {
	for _, p := range prevEventIDs {
		if _, err := o.q.exec(ctx, `INSERT INTO rooms_event_edges (event_nid, prev_event_id) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, eventNID, p); err != nil {
			return err
		}
	}
	return nil
}

// SetForwardExtremities replaces the room's forward extremities.
func (o ops) SetForwardExtremities(ctx context.Context, roomNID int64, eventNIDs []int64) error {
	if _, err := o.q.exec(ctx, `DELETE FROM rooms_forward_extremities WHERE room_nid = $1`, roomNID); err != nil {
		return err
	}
	for _, e := range eventNIDs {
		if _, err := o.q.exec(ctx, `INSERT INTO rooms_forward_extremities (room_nid, event_nid) VALUES ($1, $2)`, roomNID, e); err != nil {
			return err
		}
	}
	return nil
}

// ForwardExtremities returns the room's forward extremities.
func (o ops) ForwardExtremities(ctx context.Context, roomNID int64) ([]int64, error) {
	rows, err := o.q.query(ctx, `SELECT event_nid FROM rooms_forward_extremities WHERE room_nid = $1 ORDER BY event_nid`, roomNID)
	if err != nil {
		return nil, err
	}
	return scanInt64s(rows)
}

const eventColumns = `event_nid, room_nid, event_id, type, state_key, sender, depth, origin_server_ts, stream_pos,
	state_before_nid, state_after_nid, status, rejection_reason, redacted_by, relates_to, rel_type, replaces_nid, json`

func scanEvent(sc interface{ Scan(...any) error }) (EventRow, error) {
	var e EventRow
	var stateKey, reason, redactedBy, relatesTo, relType sql.NullString
	var pos sql.NullInt64
	var js string
	err := sc.Scan(&e.NID, &e.RoomNID, &e.EventID, &e.Type, &stateKey, &e.Sender, &e.Depth, &e.OriginServerTS, &pos,
		&e.StateBeforeNID, &e.StateAfterNID, &e.Status, &reason, &redactedBy, &relatesTo, &relType, &e.ReplacesNID, &js)
	if err != nil {
		return EventRow{}, err
	}
	if stateKey.Valid {
		e.StateKey = &stateKey.String
	}
	e.StreamPos, e.RejectionReason, e.RedactedBy = pos.Int64, reason.String, redactedBy.String
	e.RelatesTo, e.RelType, e.JSON = relatesTo.String, relType.String, []byte(js)
	return e, nil
}

func scanEvents(rows *sql.Rows, err error) ([]EventRow, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []EventRow
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventsByNID loads events by numeric ID, in no particular order.
func (o ops) EventsByNID(ctx context.Context, nids []int64) ([]EventRow, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_nid IN `+o.inList("$1", "bigint"), jsonList(nids)))
}

// EventsByID loads events by event ID, in no particular order; unknown IDs
// are left out.
func (o ops) EventsByID(ctx context.Context, ids []string) ([]EventRow, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_id IN `+o.inList("$1", "text"), jsonList(ids)))
}

// EventByID loads one event, or ErrNotFound.
func (o ops) EventByID(ctx context.Context, id string) (EventRow, error) {
	e, err := scanEvent(o.q.queryRow(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return EventRow{}, ErrNotFound
	}
	return e, err
}

// SetStateAfter records the snapshot after a state event, known only once
// the event has its numeric ID.
func (o ops) SetStateAfter(ctx context.Context, eventNID, snapshotNID int64) error {
	return expectOne(o.q.exec(ctx, `UPDATE rooms_events SET state_after_nid = $1 WHERE event_nid = $2`, snapshotNID, eventNID))
}

// TransactionIDs maps the given events to the transaction IDs one device
// sent them with (only that device sees them, spec: unsigned.transaction_id).
func (o ops) TransactionIDs(ctx context.Context, localpart, deviceID string, eventIDs []string) (map[string]string, error) {
	out := map[string]string{}
	if len(eventIDs) == 0 {
		return out, nil
	}
	rows, err := o.q.query(ctx, `SELECT event_id, txn_id FROM rooms_transactions WHERE localpart = $1 AND device_id = $2
		AND event_id IN `+o.inList("$3", "text"), localpart, deviceID, jsonList(eventIDs))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e, t string
		if err := rows.Scan(&e, &t); err != nil {
			return nil, err
		}
		out[e] = t
	}
	return out, rows.Err()
}

// SetRedactedBy marks an event as redacted by an accepted redaction.
func (o ops) SetRedactedBy(ctx context.Context, eventID, redactionID string) error {
	// The redacted content has no m.relates_to left, so neither may the
	// relation columns (relations, threads and aggregations read them).
	_, err := o.q.exec(ctx, `UPDATE rooms_events SET redacted_by = $1, relates_to = NULL, rel_type = NULL
		WHERE event_id = $2 AND redacted_by IS NULL`, redactionID, eventID)
	return err
}

// StateEntry is one (type, state_key) → event of a snapshot; EventNID 0
// removes the key.
type StateEntry struct {
	Type, StateKey string
	EventNID       int64
}

// InsertSnapshot stores a snapshot given as its difference to parent (0:
// the entries are the full state) and returns its ID.
func (o ops) InsertSnapshot(ctx context.Context, roomNID, parent int64, chainLength, size int, entries []StateEntry) (int64, error) {
	var nid int64
	err := o.q.writeRow(ctx, `INSERT INTO rooms_state_snapshots (room_nid, parent_nid, chain_length, size)
		VALUES ($1, $2, $3, $4) RETURNING snapshot_nid`, roomNID, parent, chainLength, size).Scan(&nid)
	if err != nil {
		return 0, err
	}
	if len(entries) > 8 {
		return nid, o.insertStateEntries(ctx, nid, entries)
	}
	for _, e := range entries {
		if _, err := o.q.exec(ctx, `INSERT INTO rooms_state_entries (snapshot_nid, type, state_key, event_nid) VALUES ($1, $2, $3, $4)`,
			nid, e.Type, e.StateKey, e.EventNID); err != nil {
			return 0, err
		}
	}
	return nid, nil
}

// SnapshotInfo returns a snapshot's chain length and full size.
func (o ops) SnapshotInfo(ctx context.Context, nid int64) (chainLength, size int, err error) {
	err = o.q.queryRow(ctx, `SELECT chain_length, size FROM rooms_state_snapshots WHERE snapshot_nid = $1`, nid).Scan(&chainLength, &size)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	return
}

// snapshotChain walks from a snapshot to its root; depth 0 is the snapshot
// itself, so the smallest depth per key wins.
const snapshotChain = `WITH RECURSIVE chain(nid, parent, depth) AS (
		SELECT snapshot_nid, parent_nid, 0 FROM rooms_state_snapshots WHERE snapshot_nid = $1
		UNION ALL
		SELECT s.snapshot_nid, s.parent_nid, chain.depth + 1 FROM rooms_state_snapshots s JOIN chain ON s.snapshot_nid = chain.parent
	)`

// Snapshot returns the full state of a snapshot: (type, state_key) →
// event NID.
func (o ops) Snapshot(ctx context.Context, nid int64) (map[[2]string]int64, error) {
	out := map[[2]string]int64{}
	if nid == 0 {
		return out, nil
	}
	rows, err := o.q.query(ctx, snapshotChain+`
		SELECT e.type, e.state_key, e.event_nid FROM chain JOIN rooms_state_entries e ON e.snapshot_nid = chain.nid
		ORDER BY chain.depth DESC`, nid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k [2]string
		var ev int64
		if err := rows.Scan(&k[0], &k[1], &ev); err != nil {
			return nil, err
		}
		// Rows come root first, so later (closer) entries override.
		if ev == 0 {
			delete(out, k)
		} else {
			out[k] = ev
		}
	}
	return out, rows.Err()
}

// SnapshotEntry returns the event NID for one key of a snapshot, or 0.
func (o ops) SnapshotEntry(ctx context.Context, nid int64, typ, stateKey string) (int64, error) {
	if nid == 0 {
		return 0, nil
	}
	var ev int64
	err := o.q.queryRow(ctx, snapshotChain+`
		SELECT e.event_nid FROM chain JOIN rooms_state_entries e ON e.snapshot_nid = chain.nid
		WHERE e.type = $2 AND e.state_key = $3 ORDER BY chain.depth LIMIT 1`, nid, typ, stateKey).Scan(&ev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return ev, err
}

// CurrentStateChange sets (EventNID > 0) or removes a current state key.
type CurrentStateChange struct {
	Type, StateKey string
	EventNID       int64
	Membership     string // for m.room.member
}

// UpdateCurrentState applies changes to a room's materialized state.
func (o ops) UpdateCurrentState(ctx context.Context, roomNID int64, changes []CurrentStateChange) error {
	if len(changes) > 8 {
		var upserts, deletes []CurrentStateChange
		for _, c := range changes {
			if c.EventNID == 0 {
				deletes = append(deletes, c)
			} else {
				upserts = append(upserts, c)
			}
		}
		if err := o.upsertCurrentState(ctx, roomNID, upserts); err != nil {
			return err
		}
		changes = deletes
	}
	for _, c := range changes {
		var err error
		if c.EventNID == 0 {
			_, err = o.q.exec(ctx, `DELETE FROM rooms_current_state WHERE room_nid = $1 AND type = $2 AND state_key = $3`, roomNID, c.Type, c.StateKey)
		} else {
			_, err = o.q.exec(ctx, `INSERT INTO rooms_current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
				roomNID, c.Type, c.StateKey, c.EventNID, nullString(c.Membership))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CurrentStateNIDs returns a room's current state as event NIDs.
func (o ops) CurrentStateNIDs(ctx context.Context, roomNID int64) ([]int64, error) {
	rows, err := o.q.query(ctx, `SELECT event_nid FROM rooms_current_state WHERE room_nid = $1`, roomNID)
	if err != nil {
		return nil, err
	}
	return scanInt64s(rows)
}

// UserRoom is a room with the user's current membership in it.
type UserRoom struct {
	RoomNID    int64
	RoomID     string
	Membership string
	EventNID   int64 // the membership event
	Room       Room
}

// RoomsOfUser lists the rooms where the user's current membership is one
// of memberships (all rooms with any membership when empty), leaving out
// forgotten rooms.
func (o ops) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]UserRoom, error) {
	rows, err := o.q.query(ctx, `SELECT c.room_nid, r.room_id, c.membership, c.event_nid,
			r.room_version, r.created_ts, r.state_nid, r.visibility
		FROM rooms_current_state c JOIN rooms_rooms r ON r.room_nid = c.room_nid
		WHERE c.type = 'm.room.member' AND c.state_key = $1
		AND NOT EXISTS (SELECT 1 FROM rooms_forgotten f WHERE f.room_nid = c.room_nid AND f.user_id = $1)
		ORDER BY c.room_nid`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserRoom
	for rows.Next() {
		var r UserRoom
		if err := rows.Scan(&r.RoomNID, &r.RoomID, &r.Membership, &r.EventNID,
			&r.Room.Version, &r.Room.CreatedTS, &r.Room.StateNID, &r.Room.Visibility); err != nil {
			return nil, err
		}
		r.Room.NID, r.Room.RoomID = r.RoomNID, r.RoomID
		if len(memberships) == 0 || slices.Contains(memberships, r.Membership) {
			out = append(out, r)
		}
	}
	return out, rows.Err()
}

// Member is a user's current membership in a room.
type Member struct {
	UserID     string
	Membership string
	EventNID   int64
}

// Members lists a room's current member events.
func (o ops) Members(ctx context.Context, roomNID int64) ([]Member, error) {
	rows, err := o.q.query(ctx, `SELECT state_key, membership, event_nid FROM rooms_current_state
		WHERE room_nid = $1 AND type = 'm.room.member' ORDER BY state_key`, roomNID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var r Member
		if err := rows.Scan(&r.UserID, &r.Membership, &r.EventNID); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetForgotten marks or unmarks a room as forgotten by a user.
func (o ops) SetForgotten(ctx context.Context, roomNID int64, userID string, forgotten bool) error {
	var err error
	if forgotten {
		_, err = o.q.exec(ctx, `INSERT INTO rooms_forgotten (room_nid, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, roomNID, userID)
	} else {
		_, err = o.q.exec(ctx, `DELETE FROM rooms_forgotten WHERE room_nid = $1 AND user_id = $2`, roomNID, userID)
	}
	return err
}

// Forgotten reports whether the user forgot the room.
func (o ops) Forgotten(ctx context.Context, roomNID int64, userID string) (bool, error) {
	var n int
	err := o.q.queryRow(ctx, `SELECT COUNT(*) FROM rooms_forgotten WHERE room_nid = $1 AND user_id = $2`, roomNID, userID).Scan(&n)
	return n > 0, err
}

// PutTransaction records the event a client transaction produced.
func (o ops) PutTransaction(ctx context.Context, localpart, deviceID, txnID, eventID string, ts int64) error {
	_, err := o.q.exec(ctx, `INSERT INTO rooms_transactions (localpart, device_id, txn_id, event_id, created_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, localpart, deviceID, txnID, eventID, ts)
	return err
}

// Transaction returns the event of an earlier client transaction, or "".
func (o ops) Transaction(ctx context.Context, localpart, deviceID, txnID string) (string, error) {
	var id string
	err := o.q.queryRow(ctx, `SELECT event_id FROM rooms_transactions WHERE localpart = $1 AND device_id = $2 AND txn_id = $3`,
		localpart, deviceID, txnID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// MaxStreamPos is the highest stream position persisted anywhere.
func (o ops) MaxStreamPos(ctx context.Context) (int64, error) {
	var a, b sql.NullInt64
	if err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM rooms_events`).Scan(&a); err != nil {
		return 0, err
	}
	if err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM accounts_account_data`).Scan(&b); err != nil {
		return 0, err
	}
	c, err := o.MaxReceiptStreamPos(ctx)
	if err != nil {
		return 0, err
	}
	d, err := o.MaxToDeviceStreamPos(ctx)
	if err != nil {
		return 0, err
	}
	e, err := o.MaxPresenceStreamPos(ctx)
	if err != nil {
		return 0, err
	}
	f, err := o.maxDeviceListPos(ctx)
	if err != nil {
		return 0, err
	}
	return max(a.Int64, b.Int64, c, d, e, f), nil
}

func scanInt64s(rows *sql.Rows) ([]int64, error) {
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// TopoPoint is a point between events in a room's topological order
// (depth, then stream position): the point just before the event with
// this key.
type TopoPoint struct{ Depth, Stream int64 }

// RoomEventsTopological pages through a room's visible events from a
// point: backwards returns the events before it, newest first; forwards
// the events at or after it, oldest first.
func (o ops) RoomEventsTopological(ctx context.Context, roomNID int64, from TopoPoint, backwards bool, limit int) ([]EventRow, error) {
	q := `SELECT ` + eventColumns + ` FROM rooms_events WHERE room_nid = $1 AND stream_pos IS NOT NULL
		AND (depth, stream_pos) >= ($2, $3) ORDER BY depth, stream_pos LIMIT $4`
	if backwards {
		q = `SELECT ` + eventColumns + ` FROM rooms_events WHERE room_nid = $1 AND stream_pos IS NOT NULL
		AND (depth, stream_pos) < ($2, $3) ORDER BY depth DESC, stream_pos DESC LIMIT $4`
	}
	return scanEvents(o.q.query(ctx, q, roomNID, from.Depth, from.Stream, limit))
}

// PointAfterStream is the topological point just after the room's last
// event at or before stream position pos ({0, 0} when there is none).
func (o ops) PointAfterStream(ctx context.Context, roomNID, pos int64) (TopoPoint, error) {
	var p TopoPoint
	err := o.q.queryRow(ctx, `SELECT depth, stream_pos FROM rooms_events WHERE room_nid = $1 AND stream_pos IS NOT NULL
		AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1`, roomNID, pos).Scan(&p.Depth, &p.Stream)
	if errors.Is(err, sql.ErrNoRows) {
		return TopoPoint{}, nil
	}
	p.Stream++
	return p, err
}

// LastEventAtOrBefore returns the room's last visible event at or before
// stream position pos, or ErrNotFound.
func (o ops) LastEventAtOrBefore(ctx context.Context, roomNID, pos int64) (EventRow, error) {
	e, err := scanEvent(o.q.queryRow(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE room_nid = $1
		AND stream_pos IS NOT NULL AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1`, roomNID, pos))
	if errors.Is(err, sql.ErrNoRows) {
		return e, ErrNotFound
	}
	return e, err
}

// RoomEventsStream returns a room's visible events with stream positions
// in (after, upTo], newest first, at most limit.
func (o ops) RoomEventsStream(ctx context.Context, roomNID, after, upTo int64, limit int) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE room_nid = $1
		AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT $4`, roomNID, after, upTo, limit))
}

// RoomsWithEvents returns which of the given rooms have visible events
// with stream positions in (after, upTo].
func (o ops) RoomsWithEvents(ctx context.Context, roomNIDs []int64, after, upTo int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	if len(roomNIDs) == 0 || after >= upTo {
		return out, nil
	}
	rows, err := o.q.query(ctx, `SELECT DISTINCT room_nid FROM rooms_events WHERE stream_pos > $1 AND stream_pos <= $2
		AND room_nid IN `+o.inList("$3", "bigint"), after, upTo, jsonList(roomNIDs))
	if err != nil {
		return nil, err
	}
	nids, err := scanInt64s(rows)
	for _, n := range nids {
		out[n] = true
	}
	return out, err
}

// MembershipEventsSince returns a user's membership events (as target)
// with stream positions in (after, upTo], oldest first.
func (o ops) MembershipEventsSince(ctx context.Context, userID string, after, upTo int64) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE type = 'm.room.member'
		AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, after, upTo))
}

// CurrentMembership returns a user's current membership in a room and the
// stream position of the event that set it ("" and 0 when there is none).
func (o ops) CurrentMembership(ctx context.Context, roomNID int64, userID string) (string, int64, error) {
	var m sql.NullString
	var pos sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT c.membership, e.stream_pos FROM rooms_current_state c
		JOIN rooms_events e ON e.event_nid = c.event_nid
		WHERE c.room_nid = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomNID, userID).Scan(&m, &pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	return m.String, pos.Int64, err
}

// PromoteOutlier gives an event stored as an outlier its place in the
// DAG: stream position, state and status, from row (matched by NID).
func (o ops) PromoteOutlier(ctx context.Context, e *EventRow) error {
	_, err := o.q.exec(ctx, `UPDATE rooms_events SET stream_pos = $2, state_before_nid = $3, state_after_nid = $4, status = $5,
			rejection_reason = $6, replaces_nid = $7, relates_to = $8, rel_type = $9
		WHERE event_nid = $1 AND status = 3`,
		e.NID, nullInt(e.StreamPos), e.StateBeforeNID, e.StateAfterNID, e.Status, nullString(e.RejectionReason), e.ReplacesNID,
		nullString(e.RelatesTo), nullString(e.RelType))
	return err
}

// MemberEventsOf returns a user's accepted membership events in a room
// that are in the stream, oldest first.
func (o ops) MemberEventsOf(ctx context.Context, roomNID int64, userID string) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE room_nid = $1 AND type = 'm.room.member'
		AND state_key = $2 AND status = 0 AND stream_pos IS NOT NULL ORDER BY stream_pos`, roomNID, userID))
}
