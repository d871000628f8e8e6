package storage

import (
	"context"
	"database/sql"
	"errors"

	"github.com/veche/veche/config"
)

// listRows is a FROM clause yielding the elements of a JSON array
// parameter as rows with one column, value (text): the portable way to
// insert one row per element in one statement.
func (o ops) listRows(param string) string {
	if o.backend == config.SQLite {
		return "json_each(" + param + ")"
	}
	return "json_array_elements_text(" + param + "::json) AS t(value)"
}

// StreamEvent is an accepted event in the global stream, with what the
// federation sender needs to route it.
type StreamEvent struct {
	NID         int64
	RoomNID     int64
	RoomID      string
	RoomVersion string
	Type        string
	StateKey    *string
	Sender      string
	StreamPos   int64
	// Membership is content.membership of m.room.member events.
	Membership string
}

// StreamEvents returns the accepted events with stream positions in
// (after, upTo], in stream order, at most limit.
func (o ops) StreamEvents(ctx context.Context, after, upTo int64, limit int) ([]StreamEvent, error) {
	rows, err := o.q.query(ctx, `SELECT e.event_nid, e.room_nid, r.room_id, r.room_version, e.type, e.state_key, e.sender, e.stream_pos,
			CASE WHEN e.type = 'm.room.member' THEN e.json ELSE '' END
		FROM rooms_events e JOIN rooms_rooms r ON r.room_nid = e.room_nid
		WHERE e.stream_pos > $1 AND e.stream_pos <= $2 AND e.status = 0
		ORDER BY e.stream_pos LIMIT $3`, after, upTo, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StreamEvent
	for rows.Next() {
		var e StreamEvent
		var stateKey sql.NullString
		var js string
		if err := rows.Scan(&e.NID, &e.RoomNID, &e.RoomID, &e.RoomVersion, &e.Type, &stateKey, &e.Sender, &e.StreamPos, &js); err != nil {
			return nil, err
		}
		if stateKey.Valid {
			e.StateKey = &stateKey.String
		}
		if js != "" {
			e.Membership = memberEventMembership(js)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// RoomReceipt is a receipt with its room's ID.
type RoomReceipt struct {
	Receipt
	RoomID string
}

// PublicReceiptsInRange returns the m.read receipts (of every user and
// room) whose stream positions are in (after, upTo], in stream order, at
// most limit. Private receipts never leave the server.
func (o ops) PublicReceiptsInRange(ctx context.Context, after, upTo int64, limit int) ([]RoomReceipt, error) {
	rows, err := o.q.query(ctx, `SELECT l.room_nid, l.user_id, l.receipt_type, l.thread_id, l.event_id, l.event_pos, l.ts, l.stream_pos, r.room_id
		FROM receipts_latest l JOIN rooms_rooms r ON r.room_nid = l.room_nid
		WHERE l.stream_pos > $1 AND l.stream_pos <= $2 AND l.receipt_type = 'm.read'
		ORDER BY l.stream_pos LIMIT $3`, after, upTo, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RoomReceipt
	for rows.Next() {
		var r RoomReceipt
		if err := rows.Scan(&r.RoomNID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos, &r.RoomID); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// JoinedServers returns the server names of the users whose current
// membership in the room is join, each once, sorted.
func (o ops) JoinedServers(ctx context.Context, roomNID int64) ([]string, error) {
	// The server name is everything after the first colon of the user
	// ID (localparts have none; the server name may carry a port).
	pos := "INSTR(state_key, ':')"
	if o.backend == config.Postgres {
		pos = "STRPOS(state_key, ':')"
	}
	rows, err := o.q.query(ctx, `SELECT DISTINCT SUBSTR(state_key, `+pos+` + 1) AS server FROM rooms_current_state
		WHERE room_nid = $1 AND type = 'm.room.member' AND membership = 'join' AND `+pos+` > 0
		ORDER BY server`, roomNID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// ConsumerPosition returns where a consumer of the global stream has read
// up to; ok is false when it never recorded a position.
func (o ops) ConsumerPosition(ctx context.Context, consumer string) (pos int64, ok bool, err error) {
	err = o.q.queryRow(ctx, `SELECT position FROM stream_consumers WHERE consumer = $1`, consumer).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// SetConsumerPosition records where a consumer has read up to. Run it in
// the transaction that stores what the consumer derived from the stream.
func (o ops) SetConsumerPosition(ctx context.Context, consumer string, pos int64) error {
	_, err := o.q.exec(ctx, `INSERT INTO stream_consumers (consumer, position) VALUES ($1, $2)
		ON CONFLICT (consumer) DO UPDATE SET position = excluded.position`, consumer, pos)
	return err
}

// QueuePDU queues an event for each destination, after everything
// already queued for it.
func (o ops) QueuePDU(ctx context.Context, eventNID int64, destinations []string) error {
	if len(destinations) == 0 {
		return nil
	}
	_, err := o.q.exec(ctx, `INSERT INTO federation_queue_pdus (destination, event_nid)
		SELECT value, `+o.cast("$2", "bigint")+` FROM `+o.listRows("$1"), jsonList(destinations), eventNID)
	return err
}

// QueueEDU queues an EDU for each destination. With a coalesceKey, it
// replaces the unsent EDU of the same key for that destination.
func (o ops) QueueEDU(ctx context.Context, destinations []string, eduType string, content []byte, coalesceKey string) error {
	if len(destinations) == 0 {
		return nil
	}
	list := jsonList(destinations)
	if coalesceKey != "" {
		if _, err := o.q.exec(ctx, `DELETE FROM federation_queue_edus WHERE coalesce_key = $2
			AND destination IN `+o.inList("$1", "text"), list, coalesceKey); err != nil {
			return err
		}
	}
	_, err := o.q.exec(ctx, `INSERT INTO federation_queue_edus (destination, edu_type, content, coalesce_key)
		SELECT value, `+o.cast("$2", "text")+`, `+o.cast("$3", "text")+`, `+o.cast("$4", "text")+` FROM `+o.listRows("$1"),
		list, eduType, string(content), coalesceKey)
	return err
}

// cast types a parameter used where PostgreSQL cannot infer its type
// (a SELECT list).
func (o ops) cast(param, kind string) string {
	if o.backend == config.Postgres {
		return param + "::" + kind
	}
	return param
}

// QueuedPDU is a queued event for one destination. JSON is nil if the
// event no longer exists; Redacted says the event was redacted since (its
// JSON is the original, as stored).
type QueuedPDU struct {
	ID          int64
	EventNID    int64
	JSON        []byte
	RoomVersion string
	Redacted    bool
}

// QueuedPDUs returns the oldest PDUs queued for a destination, in queue
// order, at most limit.
func (o ops) QueuedPDUs(ctx context.Context, destination string, limit int) ([]QueuedPDU, error) {
	rows, err := o.q.query(ctx, `SELECT q.id, q.event_nid, e.json, r.room_version, e.redacted_by FROM federation_queue_pdus q
		LEFT JOIN rooms_events e ON e.event_nid = q.event_nid
		LEFT JOIN rooms_rooms r ON r.room_nid = e.room_nid
		WHERE q.destination = $1 ORDER BY q.id LIMIT $2`, destination, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueuedPDU
	for rows.Next() {
		var p QueuedPDU
		var js, version, redactedBy sql.NullString
		if err := rows.Scan(&p.ID, &p.EventNID, &js, &version, &redactedBy); err != nil {
			return nil, err
		}
		if js.Valid {
			p.JSON = []byte(js.String)
		}
		p.RoomVersion, p.Redacted = version.String, redactedBy.String != ""
		out = append(out, p)
	}
	return out, rows.Err()
}

// QueuedEDU is a queued persistent EDU for one destination.
type QueuedEDU struct {
	ID      int64
	Type    string
	Content []byte
}

// QueuedEDUs returns the oldest EDUs queued for a destination, in queue
// order, at most limit.
func (o ops) QueuedEDUs(ctx context.Context, destination string, limit int) ([]QueuedEDU, error) {
	rows, err := o.q.query(ctx, `SELECT id, edu_type, content FROM federation_queue_edus
		WHERE destination = $1 ORDER BY id LIMIT $2`, destination, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueuedEDU
	for rows.Next() {
		var e QueuedEDU
		var content string
		if err := rows.Scan(&e.ID, &e.Type, &content); err != nil {
			return nil, err
		}
		e.Content = []byte(content)
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteQueued removes sent (or given up) queue rows by ID.
func (o ops) DeleteQueued(ctx context.Context, pduIDs, eduIDs []int64) error {
	if len(pduIDs) > 0 {
		if _, err := o.q.exec(ctx, `DELETE FROM federation_queue_pdus WHERE id IN `+o.inList("$1", "bigint"), jsonList(pduIDs)); err != nil {
			return err
		}
	}
	if len(eduIDs) > 0 {
		if _, err := o.q.exec(ctx, `DELETE FROM federation_queue_edus WHERE id IN `+o.inList("$1", "bigint"), jsonList(eduIDs)); err != nil {
			return err
		}
	}
	return nil
}

// QueuedDestinations lists the destinations with anything queued.
func (o ops) QueuedDestinations(ctx context.Context) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT destination FROM federation_queue_pdus
		UNION SELECT destination FROM federation_queue_edus ORDER BY destination`)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// DestinationBackoff is the retry state of a destination whose last
// transaction failed.
type DestinationBackoff struct {
	Destination string
	Failures    int   // consecutive failed attempts
	RetryAtTS   int64 // ms; no attempt before
}

// FederationBackoffs returns every destination in backoff.
func (o ops) FederationBackoffs(ctx context.Context) ([]DestinationBackoff, error) {
	rows, err := o.q.query(ctx, `SELECT destination, failures, retry_at_ts FROM federation_queue_backoff ORDER BY destination`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DestinationBackoff
	for rows.Next() {
		var b DestinationBackoff
		if err := rows.Scan(&b.Destination, &b.Failures, &b.RetryAtTS); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// SetFederationBackoff records a destination's retry state; zero
// failures clears it.
func (o ops) SetFederationBackoff(ctx context.Context, b DestinationBackoff) error {
	if b.Failures <= 0 {
		_, err := o.q.exec(ctx, `DELETE FROM federation_queue_backoff WHERE destination = $1`, b.Destination)
		return err
	}
	_, err := o.q.exec(ctx, `INSERT INTO federation_queue_backoff (destination, failures, retry_at_ts) VALUES ($1, $2, $3)
		ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures, retry_at_ts = excluded.retry_at_ts`,
		b.Destination, b.Failures, b.RetryAtTS)
	return err
}
