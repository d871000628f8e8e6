package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"strings"
)

// Receipt types kept in receipts_latest (spec: "Receipts"). m.fully_read
// is not a receipt: it lives in room account data.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// ThreadMain is the thread ID of the main timeline in threaded receipts;
// unthreaded receipts have the thread ID "".
const ThreadMain = "main"

// Receipt is a user's latest receipt of one type in one thread of a room.
type Receipt struct {
	RoomNID  int64
	UserID   string
	Type     string // ReceiptRead or ReceiptReadPrivate
	ThreadID string // "" unthreaded, ThreadMain, or a thread root's event ID
	EventID  string
	// EventPos is the stream position of the event read up to.
	EventPos int64
	TS       int64 // when the receipt was sent, in milliseconds
	// StreamPos is the receipt's own position in the global stream.
	StreamPos int64
}

// PutReceipt stores r unless the user already has a receipt of that type
// and thread at the same or a later event (spec: receipts mean "read up
// to", so an older one changes nothing). advanced reports whether r was
// stored. r.StreamPos must be reserved by the caller from the stream.
func (o ops) PutReceipt(ctx context.Context, r Receipt) (advanced bool, err error) {
	res, err := o.q.exec(ctx, `INSERT INTO receipts_latest (room_nid, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_nid, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id,
			event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos
		WHERE receipts_latest.event_pos < excluded.event_pos`,
		r.RoomNID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventPos, r.TS, r.StreamPos)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

const receiptColumns = `room_nid, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos`

func scanReceipts(rows *sql.Rows, err error) ([]Receipt, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomNID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ReceiptsSince returns the receipts of the given rooms whose stream
// positions are in (after, upTo], oldest first, as forUser may see them:
// everyone's m.read, and m.read.private only of forUser (spec: private
// receipts go to nobody else). Only the latest receipt per user, type and
// thread is kept, so after = 0 gives the full current set (initial sync).
func (o ops) ReceiptsSince(ctx context.Context, roomNIDs []int64, after, upTo int64, forUser string) ([]Receipt, error) {
	if len(roomNIDs) == 0 || after >= upTo {
		return nil, nil
	}
	return scanReceipts(o.q.query(ctx, `SELECT `+receiptColumns+` FROM receipts_latest
		WHERE room_nid IN `+o.inList("$1", "bigint")+` AND stream_pos > $2 AND stream_pos <= $3
		AND (receipt_type = 'm.read' OR (receipt_type = 'm.read.private' AND user_id = $4))
		ORDER BY stream_pos`, jsonList(roomNIDs), after, upTo, forUser))
}

// UserReceipts returns all of one user's receipts in a room.
func (o ops) UserReceipts(ctx context.Context, roomNID int64, userID string) ([]Receipt, error) {
	return scanReceipts(o.q.query(ctx, `SELECT `+receiptColumns+` FROM receipts_latest
		WHERE room_nid = $1 AND user_id = $2 ORDER BY receipt_type, thread_id`, roomNID, userID))
}

// MaxReceiptStreamPos is the highest stream position a receipt holds.
// The stream must restart above it as above MaxStreamPos's tables.
func (o ops) MaxReceiptStreamPos(ctx context.Context) (int64, error) {
	var pos sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM receipts_latest`).Scan(&pos)
	return pos.Int64, err
}

// UnreadCount is a number of unread notifications.
type UnreadCount struct {
	Notifications int
	// Highlights is always 0 until push rules exist: a highlight needs
	// the user's rules (mentions, keywords) to be evaluated per event.
	Highlights int
}

// Unread is a user's unread notifications in one room.
type Unread struct {
	// Total counts every thread and the main timeline: sync's
	// unread_notifications when the filter does not ask for threads.
	Total UnreadCount
	// Main counts the main timeline only: unread_notifications when the
	// filter sets unread_thread_notifications.
	Main UnreadCount
	// Threads counts per thread root (unread_thread_notifications); threads
	// without unread notifications are left out.
	Threads map[string]UnreadCount
}

// UnreadFloor returns the position up to which the user has read the room
// as a whole — the latest of afterPos, their unthreaded receipt and their
// own latest message (state events do not count: a profile change sends a
// member event to every room without reading any) — and a version of the
// user's receipts in the room that changes whenever any of them moves, so
// that a caller can keep counts and add only what is new.
func (o ops) UnreadFloor(ctx context.Context, roomNID int64, userID string, afterPos, upTo int64) (floor, receiptsVersion int64, err error) {
	var unthreaded, own, version sql.NullInt64
	err = o.q.queryRow(ctx, `SELECT
		(SELECT MAX(event_pos) FROM receipts_latest WHERE room_nid = $1 AND user_id = $2
			AND receipt_type IN ('m.read', 'm.read.private') AND thread_id = ''),
		(SELECT MAX(stream_pos) FROM rooms_events WHERE room_nid = $1 AND sender = $2
			AND stream_pos IS NOT NULL AND stream_pos <= $3 AND state_key IS NULL),
		(SELECT MAX(stream_pos) FROM receipts_latest WHERE room_nid = $1 AND user_id = $2)`,
		roomNID, userID, upTo).Scan(&unthreaded, &own, &version)
	return max(afterPos, unthreaded.Int64, own.Int64), version.Int64, err
}

// IgnoredUsers returns the users a local user ignores (spec: "Ignoring
// Users"), from their m.ignored_user_list account data; empty, never nil,
// when there is none. Content that does not have the spec's shape
// (stored before the account data API checked it) ignores nobody.
func (o ops) IgnoredUsers(ctx context.Context, localpart string) (map[string]bool, error) {
	out := map[string]bool{}
	content, err := o.AccountDataEntry(ctx, localpart, "", "m.ignored_user_list")
	if errors.Is(err, ErrNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(content, &c) != nil {
		return out, nil
	}
	for u := range c.IgnoredUsers {
		if strings.HasPrefix(u, "@") {
			out[u] = true
		}
	}
	return out, nil
}

// maxUnreadCandidates bounds one count's scan: past this many unread
// events, clients show "99+" anyway.
const maxUnreadCandidates = 2000

// UnreadCandidates returns the visible message events of others in
// (after, upTo], oldest first, that push rules may count as unread, at
// most maxUnreadCandidates (the newest are kept).
func (o ops) UnreadCandidates(ctx context.Context, roomNID int64, userID string, after, upTo int64) ([]EventRow, error) {
	rows, err := scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events
		WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3 AND state_key IS NULL
		AND sender <> $4 AND redacted_by IS NULL ORDER BY stream_pos DESC LIMIT $5`,
		roomNID, after, upTo, userID, maxUnreadCandidates))
	slices.Reverse(rows)
	return rows, err
}

// ThreadReceipts returns the user's read positions in a room by thread:
// "" for unthreaded receipts, "main", and thread roots.
func (o ops) ThreadReceipts(ctx context.Context, roomNID int64, userID string) (map[string]int64, error) {
	rows, err := o.q.query(ctx, `SELECT thread_id, MAX(event_pos) FROM receipts_latest WHERE room_nid = $1 AND user_id = $2
		AND receipt_type IN ('m.read', 'm.read.private') GROUP BY thread_id`, roomNID, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var t string
		var p int64
		if err := rows.Scan(&t, &p); err != nil {
			return nil, err
		}
		out[t] = p
	}
	return out, rows.Err()
}
