package clientapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// registerRelationsRoutes mounts the routes of relations, threads, context and timestamp_to_event.
func (a *API) registerRelationsRoutes(rt *httpapi.Router) {
	const v1 = "/_matrix/client/v1/rooms/{roomId}"
	a.handleAt(rt, "GET", v1+"/relations/{eventId}", guestOK, a.relations)
	a.handleAt(rt, "GET", v1+"/relations/{eventId}/{relType}", guestOK, a.relations)
	a.handleAt(rt, "GET", v1+"/relations/{eventId}/{relType}/{eventType}", guestOK, a.relations)
	a.handleAt(rt, "GET", v1+"/threads", guestOK, a.threads)
	a.handleAt(rt, "GET", v1+"/timestamp_to_event", guestOK, a.timestampToEvent)
	a.handle(rt, "GET", "/rooms/{roomId}/context/{eventId}", guestOK, a.eventContext)
}

const (
	defaultRelationsLimit = 20
	maxRelationsLimit     = 100
	// recurseDepth is how many levels of relations recurse=true follows
	// (the spec asks for at least 3).
	recurseDepth        = 3
	defaultThreadsLimit = 20
	maxThreadsLimit     = 100
	defaultContextLimit = 10
	maxContextLimit     = 100
	// maxScanRounds bounds the queries one page may take when visibility
	// or filters drop most rows, so that a room full of invisible events
	// cannot keep a request busy (as in /messages).
	maxScanRounds = 20
)

// The ends of a room in topological order.
var (
	roomStart = storage.TopoPoint{}
	roomEnd   = storage.TopoPoint{Depth: 1 << 62, Stream: 1 << 62}
)

// parseLimit reads a limit query parameter: def when absent, at least
// least, and clamped to most (the spec lets servers cap limits).
func parseLimit(raw string, def, least, most int) (int, error) {
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < least {
		return 0, mxerr.InvalidParam(fmt.Sprintf("limit must be an integer of at least %d", least))
	}
	return min(n, most), nil
}

// visibleEvent loads an event of room that userID may see. Missing,
// elsewhere and invisible are the same 404 (spec: the server must not
// reveal events the user cannot see).
func (a *API) visibleEvent(r *http.Request, room storage.Room, userID, eventID string) (*roomserver.Event, error) {
	notFound := mxerr.NotFound("Event not found")
	ev, err := a.rs.Event(r.Context(), eventID)
	if errors.Is(err, mxerr.NotFound("")) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if ev.RoomNID != room.NID || ev.StreamPos == 0 {
		return nil, notFound
	}
	visible, err := a.rs.FilterVisible(r.Context(), room, userID, []*roomserver.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, notFound
	}
	return ev, nil
}

// topoScan describes a walk through topologically ordered events.
type topoScan struct {
	from      storage.TopoPoint
	backwards bool
	// to, when set, ends the walk: backwards at the events before it,
	// forwards at the events at or after it.
	to    *storage.TopoPoint
	limit int
	// fetch returns up to n rows from a point, in the walk's direction.
	fetch func(from storage.TopoPoint, n int) ([]storage.EventRow, error)
	// keep, when set, filters the visible events.
	keep func(*roomserver.Event) bool
}

// scanVisible walks s, keeping the events userID may see, until s.limit
// are kept. It returns them, the point after the last event it looked at
// (the next page's from), and whether more events may follow.
func (a *API) scanVisible(r *http.Request, room storage.Room, userID string, s topoScan) ([]*roomserver.Event, storage.TopoPoint, bool, error) {
	var out []*roomserver.Event
	cursor := s.from
	for round := 0; len(out) < s.limit; round++ {
		if round == maxScanRounds {
			return out, cursor, true, nil
		}
		want := max(s.limit-len(out), 20)
		rows, err := s.fetch(cursor, want)
		if err != nil {
			return nil, cursor, false, err
		}
		evs, err := a.rs.EventRows(room, rows)
		if err != nil {
			return nil, cursor, false, err
		}
		visibleList, err := a.rs.FilterVisible(r.Context(), room, userID, evs)
		if err != nil {
			return nil, cursor, false, err
		}
		visible := make(map[int64]bool, len(visibleList))
		for _, e := range visibleList {
			visible[e.NID] = true
		}
		for i, e := range evs {
			p := storage.TopoPoint{Depth: e.Depth(), Stream: e.StreamPos}
			if s.to != nil && ((s.backwards && topoLess(p, *s.to)) || (!s.backwards && !topoLess(p, *s.to))) {
				return out, cursor, false, nil
			}
			if s.backwards {
				cursor = p
			} else {
				cursor = storage.TopoPoint{Depth: p.Depth, Stream: p.Stream + 1}
			}
			if visible[e.NID] && (s.keep == nil || s.keep(e)) {
				out = append(out, e)
				if len(out) == s.limit {
					return out, cursor, i < len(evs)-1 || len(rows) == want, nil
				}
			}
		}
		if len(rows) < want {
			return out, cursor, false, nil
		}
	}
	return out, cursor, true, nil
}

// relations is GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(r *http.Request) (any, error) {
	q := r.URL.Query()
	backwards := true
	switch q.Get("dir") {
	case "", "b":
	case "f":
		backwards = false
	default:
		return nil, mxerr.InvalidParam("dir must be b or f")
	}
	limit, err := parseLimit(q.Get("limit"), defaultRelationsLimit, 1, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	depth := 1
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		depth = recurseDepth
	default:
		return nil, mxerr.InvalidParam("recurse must be true or false")
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r).UserID.String()
	// The spec answers 404 both for a missing parent and for one the
	// user may not see; a room they cannot read hides all its events.
	ok, err := a.rs.CanRead(r.Context(), room, me)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.NotFound("Event not found")
	}
	parent, err := a.visibleEvent(r, room, me, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	from, to, err := a.pageBounds(r, room, backwards)
	if err != nil {
		return nil, err
	}
	ignored, err := a.db.IgnoredUsers(r.Context(), requester(r).Localpart())
	if err != nil {
		return nil, err
	}
	rq := storage.RelationsQuery{
		RoomNID: room.NID, ParentID: parent.EventID(), RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"), Depth: depth,
	}
	chunk, cursor, more, err := a.scanVisible(r, room, me, topoScan{
		from: from, backwards: backwards, to: to, limit: limit,
		fetch: func(p storage.TopoPoint, n int) ([]storage.EventRow, error) {
			return a.db.Relations(r.Context(), rq, p, backwards, n)
		},
		keep: func(e *roomserver.Event) bool { return !ignored[string(e.SenderID())] },
	})
	if err != nil {
		return nil, err
	}
	out, err := a.format.Format(r.Context(), room, chunk, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": out}
	if more {
		resp["next_batch"] = topoToken(cursor)
	}
	if t := q.Get("from"); t != "" {
		resp["prev_batch"] = t
	}
	if q.Has("recurse") {
		resp["recursion_depth"] = depth
	}
	return resp, nil
}

// threads is GET /v1/rooms/{roomId}/threads.
func (a *API) threads(r *http.Request) (any, error) {
	q := r.URL.Query()
	me := requester(r).UserID.String()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = me
	default:
		return nil, mxerr.InvalidParam("include must be all or participated")
	}
	limit, err := parseLimit(q.Get("limit"), defaultThreadsLimit, 1, maxThreadsLimit)
	if err != nil {
		return nil, err
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	ok, err := a.rs.CanRead(r.Context(), room, me)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("You are not allowed to view this room")
	}
	cursor := roomEnd
	if t := q.Get("from"); t != "" {
		if cursor, err = a.parsePoint(r, room, t); err != nil {
			return nil, err
		}
	}
	ignored, err := a.db.IgnoredUsers(r.Context(), requester(r).Localpart())
	if err != nil {
		return nil, err
	}
	var chunk []*roomserver.Event
	more := true
	for round := 0; len(chunk) < limit && more && round < maxScanRounds; round++ {
		want := max(limit-len(chunk), 20)
		roots, err := a.db.ThreadRoots(r.Context(), room.NID, cursor, participant, want)
		if err != nil {
			return nil, err
		}
		more = len(roots) == want
		ids := make([]string, len(roots))
		for i, t := range roots {
			ids[i] = t.RootID
		}
		visible, err := a.visibleByID(r, room, me, ids)
		if err != nil {
			return nil, err
		}
		for i, t := range roots {
			cursor = t.Latest
			root := visible[t.RootID]
			if root == nil {
				continue
			}
			if ignored[string(root.SenderID())] {
				// Spec: as a client aggregating locally would show it.
				if root, err = a.rs.Redacted(room, root); err != nil {
					return nil, err
				}
			}
			chunk = append(chunk, root)
			if len(chunk) == limit {
				more = more || i < len(roots)-1
				break
			}
		}
	}
	out, err := a.format.Format(r.Context(), room, chunk, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	// A thread none of whose events the user may see (all sent after
	// they left, say) is not theirs to know about: its root then has no
	// m.thread summary, which is computed with visibility.
	listed := out[:0]
	for _, e := range out {
		if e.Unsigned.Relations[storage.RelThread] != nil {
			listed = append(listed, e)
		}
	}
	resp := map[string]any{"chunk": listed}
	if more {
		resp["next_batch"] = topoToken(cursor)
	}
	return resp, nil
}

// visibleByID loads events of room by ID and keeps those userID may see.
func (a *API) visibleByID(r *http.Request, room storage.Room, userID string, ids []string) (map[string]*roomserver.Event, error) {
	out := map[string]*roomserver.Event{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := a.db.EventsByID(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	mine := rows[:0]
	for _, row := range rows {
		if row.RoomNID == room.NID && row.StreamPos != 0 {
			mine = append(mine, row)
		}
	}
	evs, err := a.rs.EventRows(room, mine)
	if err != nil {
		return nil, err
	}
	if evs, err = a.rs.FilterVisible(r.Context(), room, userID, evs); err != nil {
		return nil, err
	}
	for _, e := range evs {
		out[e.EventID()] = e
	}
	return out, nil
}

// eventContext is GET /rooms/{roomId}/context/{eventId}.
func (a *API) eventContext(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), defaultContextLimit, 0, maxContextLimit)
	if err != nil {
		return nil, err
	}
	f, limit, err := roomEventFilterParam(q.Get("filter"), limit)
	if err != nil {
		return nil, err
	}
	room, me, err := a.readableRoom(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.visibleEvent(r, room, me, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	keep := func(e *roomserver.Event) bool { return f.Match(e.Type(), string(e.SenderID()), e.Content()) }
	fetch := func(backwards bool) func(storage.TopoPoint, int) ([]storage.EventRow, error) {
		return func(p storage.TopoPoint, n int) ([]storage.EventRow, error) {
			return a.db.RoomEventsTopological(r.Context(), room.NID, p, backwards, n)
		}
	}
	// Half before, the rest after, as Synapse splits it.
	at := storage.TopoPoint{Depth: ev.Depth(), Stream: ev.StreamPos}
	before, start, _, err := a.scanVisible(r, room, me, topoScan{
		from: at, backwards: true, limit: limit / 2, fetch: fetch(true), keep: keep,
	})
	if err != nil {
		return nil, err
	}
	after, end, _, err := a.scanVisible(r, room, me, topoScan{
		from: storage.TopoPoint{Depth: at.Depth, Stream: at.Stream + 1}, limit: limit - limit/2, fetch: fetch(false), keep: keep,
	})
	if err != nil {
		return nil, err
	}

	last := ev
	if len(after) > 0 {
		last = after[len(after)-1]
	}
	var state []*roomserver.Event
	if f.LazyLoadMembers {
		state, err = a.membersAt(r, room, last.StateAfterNID, append(append(append([]*roomserver.Event{}, before...), ev), after...))
	} else {
		state, err = a.rs.StateAt(r.Context(), room, last.StateAfterNID)
		sortEvents(state)
	}
	if err != nil {
		return nil, err
	}
	kept := state[:0]
	for _, e := range state {
		if f.Match(e.Type(), string(e.SenderID()), e.Content()) {
			kept = append(kept, e)
		}
	}

	// One Format call for everything shares its lookups.
	all := make([]*roomserver.Event, 0, 1+len(before)+len(after)+len(kept))
	all = append(append(append(append(all, ev), before...), after...), kept...)
	out, err := a.format.Format(r.Context(), room, all, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	nb, na := len(before), len(after)
	return map[string]any{
		"event":         out[0],
		"events_before": out[1 : 1+nb],
		"events_after":  out[1+nb : 1+nb+na],
		"state":         out[1+nb+na:],
		"start":         topoToken(start),
		"end":           topoToken(end),
	}, nil
}

// membersAt returns the member events, in a snapshot, of the senders of
// events (spec: lazy-loading room members).
func (a *API) membersAt(r *http.Request, room storage.Room, snapshot int64, events []*roomserver.Event) ([]*roomserver.Event, error) {
	seen := map[string]bool{}
	var out []*roomserver.Event
	for _, e := range events {
		s := string(e.SenderID())
		if seen[s] {
			continue
		}
		seen[s] = true
		m, err := a.rs.StateEventAt(r.Context(), room, snapshot, spec.MRoomMember, s)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// timestampToEvent is GET /v1/rooms/{roomId}/timestamp_to_event.
func (a *API) timestampToEvent(r *http.Request) (any, error) {
	ts, forward, err := httpapi.TimestampQuery(r)
	if err != nil {
		return nil, err
	}
	room, me, err := a.readableRoom(r)
	if err != nil {
		return nil, err
	}
	e, err := a.rs.ClosestEvent(r.Context(), room, ts, forward, func(evs []*roomserver.Event) ([]*roomserver.Event, error) {
		return a.rs.FilterVisible(r.Context(), room, me, evs)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": e.EventID(), "origin_server_ts": int64(e.OriginServerTS())}, nil
}
