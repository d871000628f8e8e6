package roomserver

import (
	"context"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// What another server may read of a room. The spec gives history
// visibility for users; a server reads on behalf of its users, so it may
// see an event when the history visibility at the event is world_readable
// or shared, or when one of its users was joined at the event (or invited,
// under "invited"). As for users, the state before and after the event
// both count: a server sees its users' joins and the visibility change
// events around them. Events it may not see are handed out redacted where
// the DAG must stay connected (/event, /backfill), as Synapse does.

// ServerVisibility answers visibility questions of one server about one
// room, remembering what it looked up; use one per request.
type ServerVisibility struct {
	rs     *Roomserver
	room   storage.Room
	server spec.ServerName
	// bySnapshot caches the verdict of check per snapshot.
	bySnapshot map[int64]bool
}

// ServerVisibility starts answering for server about room.
func (rs *Roomserver) ServerVisibility(room storage.Room, server spec.ServerName) *ServerVisibility {
	return &ServerVisibility{rs: rs, room: room, server: server, bySnapshot: map[int64]bool{}}
}

// InRoomNow reports whether some user of the server is joined now.
func (v *ServerVisibility) InRoomNow(ctx context.Context) (bool, error) {
	servers, err := v.rs.db.JoinedServers(ctx, v.room.NID)
	if err != nil {
		return false, err
	}
	return slices.Contains(servers, string(v.server)), nil
}

// InRoomAt reports whether some user of the server is joined now or was
// joined just before or after one of the events: the requests that read
// history around events (state, auth chains, backfill) need that much.
func (v *ServerVisibility) InRoomAt(ctx context.Context, events []*Event) (bool, error) {
	if ok, err := v.InRoomNow(ctx); ok || err != nil {
		return ok, err
	}
	for _, e := range events {
		for _, snap := range []int64{e.StateBeforeNID, e.StateAfterNID} {
			ms, err := v.memberships(ctx, snap)
			if err != nil {
				return false, err
			}
			if slices.Contains(ms, spec.Join) {
				return true, nil
			}
		}
	}
	return false, nil
}

// Visible reports whether the server may see the event unredacted.
// Outliers have no known state; like Synapse, treat them as visible (they
// are state and auth events, which servers exchange to check others).
func (v *ServerVisibility) Visible(ctx context.Context, e *Event) (bool, error) {
	if e.Status == storage.EventOutlier || e.StateBeforeNID == 0 {
		return true, nil
	}
	ok, err := v.check(ctx, e.StateBeforeNID)
	if ok || err != nil || e.StateAfterNID == e.StateBeforeNID || e.StateAfterNID == 0 {
		return ok, err
	}
	return v.check(ctx, e.StateAfterNID)
}

// Filter applies Visible to events: those the server may not see are
// replaced by their redacted form when redact is set, else left out. The
// order is kept; the events passed in are not changed.
func (v *ServerVisibility) Filter(ctx context.Context, events []*Event, redact bool) ([]*Event, error) {
	out := make([]*Event, 0, len(events))
	for _, e := range events {
		ok, err := v.Visible(ctx, e)
		if err != nil {
			return nil, err
		}
		switch {
		case ok:
			out = append(out, e)
		case redact:
			r, err := v.rs.Redacted(v.room, e)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// check decides visibility in one state snapshot.
func (v *ServerVisibility) check(ctx context.Context, snap int64) (bool, error) {
	if ok, known := v.bySnapshot[snap]; known {
		return ok, nil
	}
	vis, err := v.rs.visibilityAt(ctx, v.room, snap)
	if err != nil {
		return false, err
	}
	ok := vis == VisibilityWorldReadable || vis == VisibilityShared
	if !ok {
		ms, err := v.memberships(ctx, snap)
		if err != nil {
			return false, err
		}
		ok = slices.Contains(ms, spec.Join) || (vis == VisibilityInvited && slices.Contains(ms, spec.Invite))
	}
	v.bySnapshot[snap] = ok
	return ok, nil
}

// memberships lists the memberships of the server's users in a snapshot.
func (v *ServerVisibility) memberships(ctx context.Context, snap int64) ([]string, error) {
	entries, err := v.rs.db.SnapshotMembersOf(ctx, snap, string(v.server))
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	nids := make([]int64, 0, len(entries))
	for _, nid := range entries {
		nids = append(nids, nid)
	}
	evs, err := v.rs.Events(ctx, v.room, nids)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, membershipOf(e))
	}
	return out, nil
}

// Redacted returns a copy of a stored event in its redacted form (the
// stored event and the cache keep theirs).
func (rs *Roomserver) Redacted(room storage.Room, e *Event) (*Event, error) {
	if e.Redacted() {
		return e, nil
	}
	verImpl, err := roomVersionImpl(room.Version)
	if err != nil {
		return nil, err
	}
	js, err := verImpl.RedactEventJSON(e.JSON())
	if err != nil {
		return nil, err
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(e.EventID(), js, true)
	if err != nil {
		return nil, err
	}
	c := *e
	c.PDU = pdu
	return &c, nil
}
