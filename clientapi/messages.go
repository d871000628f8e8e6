package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/filter"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// Pagination tokens. "t<depth>_<stream>" is a point in a room's
// topological order (see storage.TopoPoint); "s<pos>" is a sync stream
// position, which /messages accepts as the spec says.

func topoToken(p storage.TopoPoint) string { return fmt.Sprintf("t%d_%d", p.Depth, p.Stream) }

// parsePoint turns a from/to token into a point of the room.
func (a *API) parsePoint(r *http.Request, room storage.Room, token string) (storage.TopoPoint, error) {
	bad := mxerr.InvalidParam("Invalid pagination token")
	switch {
	case strings.HasPrefix(token, "t"):
		d, s, ok := strings.Cut(token[1:], "_")
		depth, err1 := strconv.ParseInt(d, 10, 64)
		stream, err2 := strconv.ParseInt(s, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return storage.TopoPoint{}, bad
		}
		return storage.TopoPoint{Depth: depth, Stream: stream}, nil
	case strings.HasPrefix(token, "s"):
		pos, err := parseStreamToken(token)
		if err != nil {
			return storage.TopoPoint{}, bad
		}
		return a.db.PointAfterStream(r.Context(), room.NID, pos)
	}
	return storage.TopoPoint{}, bad
}

// parseStreamToken reads a sync token "s<pos>" (later parts, if any, are
// for streams kept elsewhere).
func parseStreamToken(token string) (int64, error) {
	if !strings.HasPrefix(token, "s") {
		return 0, fmt.Errorf("not a stream token")
	}
	num, _, _ := strings.Cut(token[1:], "_")
	return strconv.ParseInt(num, 10, 64)
}

// snapshotAtToken returns the state snapshot at a sync token, but never
// later than stream position upTo (what the requester may see); fallback
// is the snapshot to use when the room has nothing that early.
func (a *API) snapshotAtToken(r *http.Request, room storage.Room, token string, fallback, upTo int64) (int64, error) {
	pos, err := parseStreamToken(token)
	if err != nil {
		return 0, mxerr.InvalidParam("Invalid at token")
	}
	row, err := a.db.LastEventAtOrBefore(r.Context(), room.NID, min(pos, upTo))
	if errors.Is(err, storage.ErrNotFound) {
		return fallback, nil
	}
	if err != nil {
		return 0, err
	}
	return row.StateAfterNID, nil
}

const (
	defaultMessagesLimit = 10
	maxMessagesLimit     = 1000
)

// messages is GET /rooms/{roomId}/messages.
func (a *API) messages(r *http.Request) (any, error) {
	q := r.URL.Query()
	backwards := true
	switch q.Get("dir") {
	case "b":
	case "f":
		backwards = false
	default:
		return nil, mxerr.InvalidParam("dir must be b or f")
	}
	limit := defaultMessagesLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("Invalid limit")
		}
		limit = min(n, maxMessagesLimit)
	}
	f, limit, err := roomEventFilterParam(q.Get("filter"), limit)
	if err != nil {
		return nil, err
	}
	room, me, err := a.readableRoom(r)
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
	var chunk []*roomserver.Event
	cursor, exhausted := from, false
	var bf *pageBackfill // paging back past the history held here
	if backwards && a.fed != nil {
		bf = &pageBackfill{deadline: a.now().Add(backfillBudget)}
	}
	// Filters and visibility drop events after the query, so fetch in
	// rounds until the page is full, bounded so that a room full of
	// invisible events cannot keep a request busy.
	for round := 0; len(chunk) < limit && !exhausted && round < 20; round++ {
		want := max(limit-len(chunk), 20)
		rows, err := a.db.RoomEventsTopological(r.Context(), room.NID, cursor, backwards, want)
		if err != nil {
			return nil, err
		}
		exhausted = len(rows) < want
		if bf != nil {
			added, err := a.fillGaps(r.Context(), room, bf, rows, cursor, exhausted, limit)
			if err != nil {
				return nil, err
			}
			if added {
				exhausted = false
				continue // read the page again, with the history before it
			}
		}
		evs, err := a.rs.EventRows(room, rows)
		if err != nil {
			return nil, err
		}
		visibleList, err := a.rs.FilterVisible(r.Context(), room, me, evs)
		if err != nil {
			return nil, err
		}
		visible := make(map[string]bool, len(visibleList))
		for _, e := range visibleList {
			visible[e.EventID()] = true
		}
		for _, e := range evs {
			p := storage.TopoPoint{Depth: e.Depth(), Stream: e.StreamPos}
			// A token is the point just before its event: going back to
			// it includes that event, going forward to it does not.
			if to != nil && ((backwards && topoLess(p, *to)) || (!backwards && !topoLess(p, *to))) {
				exhausted = true
				break
			}
			if backwards {
				cursor = p
			} else {
				cursor = storage.TopoPoint{Depth: p.Depth, Stream: p.Stream + 1}
			}
			if visible[e.EventID()] && f.Match(e.Type(), string(e.SenderID()), e.Content()) && !(ignored[string(e.SenderID())] && !e.IsState()) {
				chunk = append(chunk, e)
				if len(chunk) == limit {
					break
				}
			}
		}
	}
	out, err := a.format.Format(r.Context(), room, chunk, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": out, "start": q.Get("from")}
	if resp["start"] == "" {
		resp["start"] = topoToken(from)
	}
	if !exhausted || len(chunk) == limit || (bf != nil && bf.pending) {
		resp["end"] = topoToken(cursor)
	}
	if f.LazyLoadMembers && len(chunk) > 0 {
		members, err := a.lazyMembers(r, room, chunk, f.IncludeRedundantMembers)
		if err != nil {
			return nil, err
		}
		resp["state"] = members
	}
	return resp, nil
}

// roomEventFilterParam reads the filter query parameter of /messages and
// /context; its limit can only lower the request's.
func roomEventFilterParam(param string, limit int) (filter.RoomEventFilter, int, error) {
	var f filter.RoomEventFilter
	if param == "" {
		return f, limit, nil
	}
	if err := json.Unmarshal([]byte(param), &f); err != nil {
		return f, limit, mxerr.BadJSON("Invalid filter")
	}
	if f.Limit != nil && *f.Limit > 0 {
		limit = min(limit, *f.Limit)
	}
	return f, limit, nil
}

// pageBounds reads the from and to tokens of a paginated request; without
// from, paging starts at the end of the room going backwards and at its
// start going forwards.
func (a *API) pageBounds(r *http.Request, room storage.Room, backwards bool) (storage.TopoPoint, *storage.TopoPoint, error) {
	q := r.URL.Query()
	from := roomStart
	if backwards {
		from = roomEnd
	}
	if t := q.Get("from"); t != "" {
		p, err := a.parsePoint(r, room, t)
		if err != nil {
			return from, nil, err
		}
		from = p
	}
	if t := q.Get("to"); t != "" {
		p, err := a.parsePoint(r, room, t)
		if err != nil {
			return from, nil, err
		}
		return from, &p, nil
	}
	return from, nil, nil
}

// topoLess reports a < b in topological order.
func topoLess(a, b storage.TopoPoint) bool {
	return a.Depth < b.Depth || (a.Depth == b.Depth && a.Stream < b.Stream)
}

// lazyMembers returns the member events of the senders of events, as of
// the state at the events (spec: lazy-loading room members).
func (a *API) lazyMembers(r *http.Request, room storage.Room, events []*roomserver.Event, _ bool) (any, error) {
	seen := map[string]bool{}
	var members []*roomserver.Event
	for _, e := range events {
		s := string(e.SenderID())
		if seen[s] {
			continue
		}
		seen[s] = true
		m, err := a.rs.StateEventAt(r.Context(), room, e.StateAfterNID, spec.MRoomMember, s)
		if err != nil {
			return nil, err
		}
		if m != nil {
			members = append(members, m)
		}
	}
	return a.format.Format(r.Context(), room, members, a.formatOptions(r, false))
}
