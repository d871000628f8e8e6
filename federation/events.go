package federation

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// Reading a room's history and state (spec: "Retrieving events",
// "Backfilling and retrieving missing events", "Retrieving event
// authorisation information", timestamp_to_event). Every endpoint applies
// the room's server ACL and answers only what the requesting server may
// see (roomserver.ServerVisibility): the server must be in the room (a
// user of it joined now, or around the events asked about), and events
// it may not see come back redacted, or are left out where nothing
// depends on them (get_missing_events, timestamp_to_event).
func (f *Federation) registerEventRoutes(rt *httpapi.Router) {
	f.handleSigned(rt, "GET /_matrix/federation/v1/event/{eventId}", f.getEvent)
	f.handleSigned(rt, "GET /_matrix/federation/v1/state/{roomId}", f.getState)
	f.handleSigned(rt, "GET /_matrix/federation/v1/state_ids/{roomId}", f.getStateIDs)
	f.handleSigned(rt, "GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}", f.getEventAuth)
	f.handleSigned(rt, "GET /_matrix/federation/v1/backfill/{roomId}", f.backfill)
	f.handleSigned(rt, "POST /_matrix/federation/v1/get_missing_events/{roomId}", f.getMissingEvents)
	f.handleSigned(rt, "GET /_matrix/federation/v1/timestamp_to_event/{roomId}", f.timestampToEvent)
}

const (
	// maxBackfill caps /backfill and /get_missing_events answers, as
	// Synapse does.
	maxBackfill = 100
	// defaultMissingEvents is get_missing_events' limit when none is given
	// (spec).
	defaultMissingEvents = 10
)

// errNotInRoom refuses reads by a server none of whose users is in the room.
var errNotInRoom = mxerr.Forbidden("You do not have permission to access the requested room history: this server has no users in the room")

// pduTransaction is the answer of /event and /backfill.
type pduTransaction struct {
	Origin         spec.ServerName   `json:"origin"`
	OriginServerTS spec.Timestamp    `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

func (f *Federation) transaction(events []*roomserver.Event) *pduTransaction {
	return &pduTransaction{Origin: f.serverName, OriginServerTS: spec.AsTimestamp(f.now()), PDUs: eventJSONs(events)}
}

func eventJSONs(events []*roomserver.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(events))
	for _, e := range events {
		out = append(out, e.JSON())
	}
	return out
}

func eventIDs(events []*roomserver.Event) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.EventID())
	}
	return out
}

// readRoom resolves {roomId} of a read request: the ACL applies, and the
// room must be known here.
func (f *Federation) readRoom(r *http.Request) (storage.Room, *roomserver.ServerVisibility, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return storage.Room{}, nil, err
	}
	room, err := f.rs.Room(r.Context(), roomID)
	if err != nil {
		return room, nil, err
	}
	return room, f.rs.ServerVisibility(room, OriginFrom(r.Context())), nil
}

// roomEvent loads an event of the room, or M_NOT_FOUND.
func (f *Federation) roomEvent(ctx context.Context, room storage.Room, eventID string) (*roomserver.Event, error) {
	if eventID == "" {
		return nil, mxerr.MissingParam("event_id is required")
	}
	e, err := f.rs.Event(ctx, eventID)
	if errors.Is(err, mxerr.NotFound("")) || err == nil && e.RoomNID != room.NID {
		return nil, mxerr.NotFound("Could not find event " + eventID)
	}
	return e, err
}

// requireInRoomAt refuses a server that is not in the room now and was
// not around the events.
func requireInRoomAt(ctx context.Context, v *roomserver.ServerVisibility, events []*roomserver.Event) error {
	ok, err := v.InRoomAt(ctx, events)
	if err != nil {
		return err
	}
	if !ok {
		return errNotInRoom
	}
	return nil
}

// getEvent is GET /_matrix/federation/v1/event/{eventId}.
func (f *Federation) getEvent(r *http.Request) (any, error) {
	ctx := r.Context()
	eventID := r.PathValue("eventId")
	e, err := f.rs.Event(ctx, eventID)
	if err != nil {
		if errors.Is(err, mxerr.NotFound("")) {
			return nil, mxerr.NotFound("Could not find event " + eventID)
		}
		return nil, err
	}
	room, err := f.db.RoomByNID(ctx, e.RoomNID)
	if err != nil {
		return nil, err
	}
	origin := OriginFrom(ctx)
	if err := f.checkACL(ctx, room.RoomID, origin); err != nil {
		return nil, err
	}
	v := f.rs.ServerVisibility(room, origin)
	if err := requireInRoomAt(ctx, v, []*roomserver.Event{e}); err != nil {
		return nil, err
	}
	out, err := v.Filter(ctx, []*roomserver.Event{e}, true)
	if err != nil {
		return nil, err
	}
	return f.transaction(out), nil
}

// stateAt loads what /state and /state_ids answer: the state before an
// event and the auth chain of that state, redacted when the server may
// not see the event (the IDs and the auth fields stay intact).
func (f *Federation) stateAt(r *http.Request) (state, chain []*roomserver.Event, err error) {
	ctx := r.Context()
	room, v, err := f.readRoom(r)
	if err != nil {
		return nil, nil, err
	}
	e, err := f.roomEvent(ctx, room, r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, nil, err
	}
	if err := requireInRoomAt(ctx, v, []*roomserver.Event{e}); err != nil {
		return nil, nil, err
	}
	if state, err = f.rs.StateBefore(ctx, room, e.EventID()); err != nil {
		return nil, nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(state))
	for _, s := range state {
		pdus = append(pdus, s.PDU)
	}
	if chain, err = f.rs.AuthChain(ctx, room, pdus); err != nil {
		return nil, nil, err
	}
	visible, err := v.Visible(ctx, e)
	if err != nil || visible {
		return state, chain, err
	}
	if state, err = redactAll(f.rs, room, state); err != nil {
		return nil, nil, err
	}
	chain, err = redactAll(f.rs, room, chain)
	return state, chain, err
}

func redactAll(rs *roomserver.Roomserver, room storage.Room, events []*roomserver.Event) ([]*roomserver.Event, error) {
	out := make([]*roomserver.Event, 0, len(events))
	for _, e := range events {
		r, err := rs.Redacted(room, e)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// getState is GET /_matrix/federation/v1/state/{roomId}.
func (f *Federation) getState(r *http.Request) (any, error) {
	state, chain, err := f.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": eventJSONs(state), "auth_chain": eventJSONs(chain)}, nil
}

// getStateIDs is GET /_matrix/federation/v1/state_ids/{roomId}.
func (f *Federation) getStateIDs(r *http.Request) (any, error) {
	state, chain, err := f.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
}

// getEventAuth is GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}.
func (f *Federation) getEventAuth(r *http.Request) (any, error) {
	ctx := r.Context()
	room, v, err := f.readRoom(r)
	if err != nil {
		return nil, err
	}
	e, err := f.roomEvent(ctx, room, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	if err := requireInRoomAt(ctx, v, []*roomserver.Event{e}); err != nil {
		return nil, err
	}
	chain, err := f.rs.AuthChain(ctx, room, []gomatrixserverlib.PDU{e.PDU})
	if err != nil {
		return nil, err
	}
	if visible, err := v.Visible(ctx, e); err != nil {
		return nil, err
	} else if !visible {
		if chain, err = redactAll(f.rs, room, chain); err != nil {
			return nil, err
		}
	}
	return map[string]any{"auth_chain": eventJSONs(chain)}, nil
}

// backfill is GET /_matrix/federation/v1/backfill/{roomId}: the v events
// and those before them, newest first, up to limit.
func (f *Federation) backfill(r *http.Request) (any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, mxerr.MissingParam("v is required")
	}
	if !q.Has("limit") {
		return nil, mxerr.MissingParam("limit is required")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil {
		return nil, mxerr.InvalidParam("limit must be an integer")
	}
	limit = min(max(limit, 0), maxBackfill)
	room, v, err := f.readRoom(r)
	if err != nil {
		return nil, err
	}
	starts, err := f.roomEvents(ctx, room, from)
	if err != nil {
		return nil, err
	}
	if err := requireInRoomAt(ctx, v, starts); err != nil {
		return nil, err
	}
	events, err := f.walkBack(ctx, room, starts, nil, 0, limit)
	if err != nil {
		return nil, err
	}
	if events, err = v.Filter(ctx, events, true); err != nil {
		return nil, err
	}
	return f.transaction(events), nil
}

// getMissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomId}:
// the events before latest_events, not going past earliest_events or
// below min_depth, oldest first.
func (f *Federation) getMissingEvents(r *http.Request) (any, error) {
	ctx := r.Context()
	var body struct {
		Limit          *int     `json:"limit"`
		MinDepth       int64    `json:"min_depth"`
		EarliestEvents []string `json:"earliest_events"`
		LatestEvents   []string `json:"latest_events"`
	}
	if err := decodeContent(r, &body); err != nil {
		return nil, err
	}
	if body.EarliestEvents == nil || body.LatestEvents == nil {
		return nil, mxerr.BadJSON("earliest_events and latest_events are required")
	}
	limit := defaultMissingEvents
	if body.Limit != nil {
		limit = min(max(*body.Limit, 0), maxBackfill)
	}
	room, v, err := f.readRoom(r)
	if err != nil {
		return nil, err
	}
	latest, err := f.roomEvents(ctx, room, body.LatestEvents)
	if err != nil {
		return nil, err
	}
	if err := requireInRoomAt(ctx, v, latest); err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, id := range body.EarliestEvents {
		skip[id] = true
	}
	var prevs []string
	for _, e := range latest {
		skip[e.EventID()] = true
		prevs = append(prevs, e.PrevEventIDs()...)
	}
	starts, err := f.roomEvents(ctx, room, prevs)
	if err != nil {
		return nil, err
	}
	events, err := f.walkBack(ctx, room, starts, skip, body.MinDepth, limit)
	if err != nil {
		return nil, err
	}
	// Nothing hangs off what is left out here: the asking server falls
	// back to the state at its event.
	if events, err = v.Filter(ctx, events, false); err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(events))
	for i := len(events) - 1; i >= 0; i-- {
		out = append(out, events[i].JSON())
	}
	return map[string]any{"events": out}, nil
}

// timestampToEvent is GET /_matrix/federation/v1/timestamp_to_event/{roomId}.
func (f *Federation) timestampToEvent(r *http.Request) (any, error) {
	ctx := r.Context()
	ts, forward, err := httpapi.TimestampQuery(r)
	if err != nil {
		return nil, err
	}
	room, v, err := f.readRoom(r)
	if err != nil {
		return nil, err
	}
	if ok, err := v.InRoomNow(ctx); err != nil {
		return nil, err
	} else if !ok {
		return nil, errNotInRoom
	}
	e, err := f.rs.ClosestEvent(ctx, room, ts, forward, func(evs []*roomserver.Event) ([]*roomserver.Event, error) {
		return v.Filter(ctx, evs, false)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID(), "origin_server_ts": int64(e.OriginServerTS())}, nil
}

// roomEvents loads the events of the room among ids; unknown ones and
// those of other rooms are left out.
func (f *Federation) roomEvents(ctx context.Context, room storage.Room, ids []string) ([]*roomserver.Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := f.db.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	mine := rows[:0]
	for _, row := range rows {
		if row.RoomNID == room.NID {
			mine = append(mine, row)
		}
	}
	return f.rs.EventRows(room, mine)
}

// walkBack walks the DAG backwards from starts along prev events, highest
// depth first (Synapse's order), and returns up to limit events in the
// order met: accepted and soft-failed ones, as clients of the asking
// server may be shown them. Events in skip are neither returned nor
// walked past, nor are events below minDepth.
func (f *Federation) walkBack(ctx context.Context, room storage.Room, starts []*roomserver.Event, skip map[string]bool, minDepth int64, limit int) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	for id := range skip {
		seen[id] = true
	}
	var queue eventHeap
	push := func(evs []*roomserver.Event) {
		for _, e := range evs {
			if seen[e.EventID()] || e.Depth() < minDepth {
				continue
			}
			if e.Status != storage.EventAccepted && e.Status != storage.EventSoftFailed {
				continue
			}
			seen[e.EventID()] = true
			heap.Push(&queue, e)
		}
	}
	push(starts)
	var out []*roomserver.Event
	for queue.Len() > 0 && len(out) < limit {
		e := heap.Pop(&queue).(*roomserver.Event)
		out = append(out, e)
		var next []string
		for _, id := range e.PrevEventIDs() {
			if !seen[id] {
				next = append(next, id)
			}
		}
		prevs, err := f.roomEvents(ctx, room, next)
		if err != nil {
			return nil, err
		}
		push(prevs)
	}
	return out, nil
}

// eventHeap orders events by depth, deepest first, then by event ID so
// that answers are stable.
type eventHeap []*roomserver.Event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].Depth() != h[j].Depth() {
		return h[i].Depth() > h[j].Depth()
	}
	return h[i].EventID() < h[j].EventID()
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*roomserver.Event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
