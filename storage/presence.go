package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Presence is a user's latest presence (table presence_users).
type Presence struct {
	UserID string
	// Presence is "online", "unavailable" or "offline".
	Presence string
	// StatusMsg is nil when the user has no status message.
	StatusMsg *string
	// LastActiveTS is when the user was last active, in milliseconds
	// since the epoch; 0 when unknown.
	LastActiveTS    int64
	CurrentlyActive bool
	// UpdatedTS is when the row was last written.
	UpdatedTS int64
	// StreamPos is the position of the last change clients were told of.
	StreamPos int64
}

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, updated_ts, stream_pos`

// PutPresence stores p as the user's presence, replacing what was there.
func (o ops) PutPresence(ctx context.Context, p Presence) error {
	_, err := o.q.exec(ctx, `INSERT INTO presence_users (`+presenceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
			updated_ts = excluded.updated_ts, stream_pos = excluded.stream_pos`,
		p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive, p.UpdatedTS, p.StreamPos)
	return err
}

func scanPresence(rows *sql.Rows, err error) ([]Presence, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		var p Presence
		var msg sql.NullString
		if err := rows.Scan(&p.UserID, &p.Presence, &msg, &p.LastActiveTS, &p.CurrentlyActive, &p.UpdatedTS, &p.StreamPos); err != nil {
			return nil, err
		}
		if msg.Valid {
			p.StatusMsg = &msg.String
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// UserPresence returns a user's stored presence; ErrNotFound when there
// is none.
func (o ops) UserPresence(ctx context.Context, userID string) (Presence, error) {
	ps, err := scanPresence(o.q.query(ctx, `SELECT `+presenceColumns+` FROM presence_users WHERE user_id = $1`, userID))
	if err != nil {
		return Presence{}, err
	}
	if len(ps) == 0 {
		return Presence{}, ErrNotFound
	}
	return ps[0], nil
}

// roomSharers selects (as b.state_key) the users joined to a room the
// user $1 is joined to, with repeats.
const roomSharers = `FROM rooms_current_state a JOIN rooms_current_state b ON b.room_nid = a.room_nid
	WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'
	AND b.type = 'm.room.member' AND b.membership = 'join'`

// PresenceSince returns the presence rows changed in (after, upTo] of
// forUser and of the users who share a joined room with them, oldest
// first: what sync tells forUser. after = 0 gives everyone's current
// presence (initial sync).
func (o ops) PresenceSince(ctx context.Context, forUser string, after, upTo int64) ([]Presence, error) {
	if after >= upTo {
		return nil, nil
	}
	return scanPresence(o.q.query(ctx, `SELECT `+presenceColumns+` FROM presence_users
		WHERE stream_pos > $2 AND stream_pos <= $3 AND (user_id = $1 OR user_id IN (SELECT b.state_key `+roomSharers+`))
		ORDER BY stream_pos`, forUser, after, upTo))
}

// UsersSharingRoom returns the users joined to some room userID is joined
// to, userID included when joined anywhere, each once and sorted: whom a
// change of userID's presence concerns.
func (o ops) UsersSharingRoom(ctx context.Context, userID string) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT DISTINCT b.state_key `+roomSharers+` ORDER BY b.state_key`, userID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// SharesRoom reports whether two users are both joined to some room.
func (o ops) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	var one int
	err := o.q.queryRow(ctx, `SELECT 1 FROM rooms_current_state x JOIN rooms_current_state y ON y.room_nid = x.room_nid
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'
		AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join' LIMIT 1`, a, b).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// PresentUsers returns the rows of every user whose presence is not
// offline: what the presence sweeper looks at for timeouts.
func (o ops) PresentUsers(ctx context.Context) ([]Presence, error) {
	return scanPresence(o.q.query(ctx, `SELECT `+presenceColumns+` FROM presence_users WHERE presence <> 'offline' ORDER BY user_id`))
}

// MaxPresenceStreamPos is the highest stream position a presence row
// holds; the stream must restart above it (see MaxStreamPos).
func (o ops) MaxPresenceStreamPos(ctx context.Context) (int64, error) {
	var pos sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM presence_users`).Scan(&pos)
	return pos.Int64, err
}
