package storage

import (
	"context"
	"database/sql"
	"encoding/json"
)

// PublishedRoom is a room listed in the published room directory, with
// its joined member count now and at an earlier stream position.
type PublishedRoom struct {
	NID     int64
	RoomID  string
	Version string
	// Joined is the number of joined members now.
	Joined int64
	// JoinedAt is the number of joined members as of the stream position
	// PublishedRooms was asked about.
	JoinedAt int64
}

// PublishedRooms lists the rooms whose directory visibility is "public",
// in no particular order, with their joined member counts now and as of
// stream position at.
//
// The count at a position is the current count minus the membership
// changes after it, which stay few as long as at is recent. One statement
// reads both, so that they come from the same database snapshot: a change
// committed in between would otherwise be counted once but not undone.
// The membership a user had at the position is that of their last member
// event at or before it, which is the room's state there as long as the
// room's history is linear (every room is, until federation).
func (o ops) PublishedRooms(ctx context.Context, at int64) ([]PublishedRoom, error) {
	rows, err := o.q.query(ctx, `
		SELECT 0, r.room_nid, r.room_id, r.room_version,
			(SELECT COUNT(*) FROM rooms_current_state c
				WHERE c.room_nid = r.room_nid AND c.type = 'm.room.member' AND c.membership = 'join'),
			'', ''
		FROM rooms_rooms r WHERE r.visibility = 'public'
		UNION ALL
		SELECT 1, ch.room_nid, '', '', 0, COALESCE(cs.membership, ''), COALESCE(prev.json, '')
		FROM (
			SELECT DISTINCT e.room_nid, e.state_key FROM rooms_events e
			JOIN rooms_rooms r ON r.room_nid = e.room_nid AND r.visibility = 'public'
			WHERE e.type = 'm.room.member' AND e.stream_pos > $1
		) AS ch
		LEFT JOIN rooms_current_state cs
			ON cs.room_nid = ch.room_nid AND cs.type = 'm.room.member' AND cs.state_key = ch.state_key
		LEFT JOIN rooms_events prev ON prev.event_nid = (
			SELECT p.event_nid FROM rooms_events p
			WHERE p.type = 'm.room.member' AND p.state_key = ch.state_key AND p.room_nid = ch.room_nid
				AND p.stream_pos <= $1
			ORDER BY p.stream_pos DESC LIMIT 1
		)`, at)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PublishedRoom
	delta := map[int64]int64{}
	for rows.Next() {
		var kind int
		var r PublishedRoom
		var nowMembership, thenJSON string
		if err := rows.Scan(&kind, &r.NID, &r.RoomID, &r.Version, &r.Joined, &nowMembership, &thenJSON); err != nil {
			return nil, err
		}
		if kind == 0 {
			out = append(out, r)
			continue
		}
		if nowMembership == "join" {
			delta[r.NID]++
		}
		if thenJSON != "" && memberEventMembership(thenJSON) == "join" {
			delta[r.NID]--
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		out[i].JoinedAt = out[i].Joined - delta[out[i].NID]
	}
	return out, nil
}

func memberEventMembership(js string) string {
	var ev struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	_ = json.Unmarshal([]byte(js), &ev)
	return ev.Content.Membership
}

// RoomLevelState returns the current state events with an empty state key
// of the given types in the given rooms, in no particular order.
func (o ops) RoomLevelState(ctx context.Context, roomNIDs []int64, types []string) ([]EventRow, error) {
	if len(roomNIDs) == 0 || len(types) == 0 {
		return nil, nil
	}
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_nid IN (
		SELECT event_nid FROM rooms_current_state WHERE state_key = ''
		AND room_nid IN `+o.inList("$1", "bigint")+` AND type IN `+o.inList("$2", "text")+`)`,
		jsonList(roomNIDs), jsonList(types)))
}

// MaybeOpenRooms returns the current m.room.join_rules and
// m.room.history_visibility events, of every room, that may make a room
// open to everyone: a public join rule or world-readable history. It is a
// superset, taken on the event's text (stored events are canonical JSON,
// which writes those values unescaped); the caller checks the content.
// Redaction keeps both values, so the stored content is the one to read.
func (o ops) MaybeOpenRooms(ctx context.Context) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_nid IN (
		SELECT event_nid FROM rooms_current_state WHERE state_key = ''
		AND type IN ('m.room.join_rules', 'm.room.history_visibility'))
		AND (json LIKE '%"public"%' OR json LIKE '%"world_readable"%')`))
}

// JoinedUsersOfRooms lists the users joined to any of the given rooms,
// each once, ordered by user ID.
func (o ops) JoinedUsersOfRooms(ctx context.Context, roomNIDs []int64) ([]string, error) {
	if len(roomNIDs) == 0 {
		return nil, nil
	}
	rows, err := o.q.query(ctx, `SELECT DISTINCT state_key FROM rooms_current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND room_nid IN `+o.inList("$1", "bigint")+`
		ORDER BY state_key`, jsonList(roomNIDs))
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// DirectoryProfile is what the user directory shows of a local user.
type DirectoryProfile struct {
	DisplayName, AvatarURL string
}

// DirectoryProfiles returns the display names and avatars of the given
// local users, leaving out unknown and deactivated accounts.
func (o ops) DirectoryProfiles(ctx context.Context, localparts []string) (map[string]DirectoryProfile, error) {
	out := map[string]DirectoryProfile{}
	if len(localparts) == 0 {
		return out, nil
	}
	rows, err := o.q.query(ctx, `SELECT u.localpart, p.field, p.value_json FROM accounts_users u
		LEFT JOIN accounts_profile_fields p ON p.localpart = u.localpart AND p.field IN ('displayname', 'avatar_url')
		WHERE u.deactivated_ts IS NULL AND u.localpart IN `+o.inList("$1", "text"), jsonList(localparts))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var localpart string
		var field, value sql.NullString
		if err := rows.Scan(&localpart, &field, &value); err != nil {
			return nil, err
		}
		p := out[localpart]
		var s string
		// Values are JSON; a field that is not a string is no name.
		if value.Valid && json.Unmarshal([]byte(value.String), &s) == nil {
			switch field.String {
			case "displayname":
				p.DisplayName = s
			case "avatar_url":
				p.AvatarURL = s
			}
		}
		out[localpart] = p
	}
	return out, rows.Err()
}
