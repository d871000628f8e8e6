package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// History visibility values (spec: m.room.history_visibility).
const (
	VisibilityWorldReadable = "world_readable"
	VisibilityShared        = "shared"
	VisibilityInvited       = "invited"
	VisibilityJoined        = "joined"
)

// visibilityAt returns the history visibility in a snapshot; "shared"
// when unset, as the spec says.
func (rs *Roomserver) visibilityAt(ctx context.Context, room storage.Room, snapshotNID int64) (string, error) {
	e, err := rs.StateEventAt(ctx, room, snapshotNID, spec.MRoomHistoryVisibility, "")
	if err != nil || e == nil {
		return VisibilityShared, err
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if json.Unmarshal(e.Content(), &c) != nil {
		return VisibilityShared, nil
	}
	switch c.HistoryVisibility {
	case VisibilityWorldReadable, VisibilityShared, VisibilityInvited, VisibilityJoined:
		return c.HistoryVisibility, nil
	}
	return VisibilityShared, nil
}

// Visibility of a room's history now, for peeking readers.
func (rs *Roomserver) Visibility(ctx context.Context, room storage.Room) (string, error) {
	return rs.visibilityAt(ctx, room, room.StateNID)
}

// FilterVisible keeps the events userID may see (spec: "History
// visibility"): everything in world_readable history; what was sent while
// the user was joined (or invited, under "invited"); and, under "shared",
// everything while the user is currently joined. The user's own membership
// events count, since the state after them is used.
func (rs *Roomserver) FilterVisible(ctx context.Context, room storage.Room, userID string, events []*Event) ([]*Event, error) {
	current, since, err := rs.db.CurrentMembership(ctx, room.NID, userID)
	if err != nil {
		return nil, err
	}
	// lastJoin is the stream position of the user's latest join: under
	// "shared", everything sent before it is visible (spec rule 3). It
	// is looked up only when an event needs it.
	lastJoin := int64(-1)
	joinedLater := func(pos int64) (bool, error) {
		if lastJoin < 0 {
			lastJoin = 0
			rows, err := rs.db.MemberEventsOf(ctx, room.NID, userID)
			if err != nil {
				return false, err
			}
			for _, r := range rows {
				var ev struct {
					Content struct {
						Membership string `json:"membership"`
					} `json:"content"`
				}
				if json.Unmarshal(r.JSON, &ev) == nil && ev.Content.Membership == spec.Join {
					lastJoin = r.StreamPos
				}
			}
		}
		return pos != 0 && pos < lastJoin, nil
	}
	type verdict struct{ ok, known bool }
	cache := map[int64]verdict{}
	out := events[:0:0]
	for _, e := range events {
		if e.Type() == spec.MRoomMember && e.StateKey() != nil && *e.StateKey() == userID {
			// One's own membership events are visible when the membership
			// before or after them allows it (spec).
			ok := false
			for _, snap := range []int64{e.StateBeforeNID, e.StateAfterNID} {
				m, err := rs.MembershipAt(ctx, room, snap, userID)
				if err != nil {
					return nil, err
				}
				ok = ok || m == spec.Join
			}
			if ok || membershipOf(e) == spec.Join {
				out = append(out, e)
				continue
			}
		}
		// Fast path: everything after the join that is still the user's
		// membership was sent while they were in the room.
		if current == spec.Join && since > 0 && e.StreamPos > since {
			out = append(out, e)
			continue
		}
		snap := e.StateAfterNID
		var v verdict
		if e.StateBeforeNID == e.StateAfterNID {
			v = cache[snap]
		}
		if !v.known {
			vis, err := rs.visibilityAt(ctx, room, e.StateBeforeNID)
			if err != nil {
				return nil, err
			}
			m, err := rs.MembershipAt(ctx, room, snap, userID)
			if err != nil {
				return nil, err
			}
			v.known = true
			switch {
			case vis == VisibilityWorldReadable, m == spec.Join:
				v.ok = true
			case vis == VisibilityInvited && m == spec.Invite:
				v.ok = true
			case vis == VisibilityShared && current == spec.Join:
				v.ok = true
			}
			if e.StateBeforeNID == e.StateAfterNID {
				cache[snap] = v
			}
		}
		if !v.ok {
			// Sent before a later join of the user: visible under
			// "shared" (not cached: it depends on the event's position).
			later, err := joinedLater(e.StreamPos)
			if err != nil {
				return nil, err
			}
			if later {
				vis, err := rs.visibilityAt(ctx, room, e.StateBeforeNID)
				if err != nil {
					return nil, err
				}
				v.ok = vis == VisibilityShared
			}
		}
		if v.ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// CanRead reports whether userID may read any of the room's history now:
// anyone who is or was in the room (FilterVisible then decides event by
// event), or anyone at all when the history is world readable.
func (rs *Roomserver) CanRead(ctx context.Context, room storage.Room, userID string) (bool, error) {
	m, err := rs.Membership(ctx, room, userID)
	if err != nil {
		return false, err
	}
	if m != "" && m != spec.Knock {
		return true, nil
	}
	vis, err := rs.Visibility(ctx, room)
	return vis == VisibilityWorldReadable, err
}
