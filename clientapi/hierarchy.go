package clientapi

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
)

// Spaces (spec: GET /_matrix/client/v1/rooms/{roomId}/hierarchy): the
// space tree under a room, walked depth-first as the spec and Synapse do
// (a child's subtree comes before its next sibling), children in the
// spec's order. What a room and its children look like is shared with
// the federation API's answer, in internal/roomdir.
//
// A room is shown, and its children walked, when the requester may see
// it: they are joined or invited, anyone may join, knock or read it, or
// its join rule is restricted and they are joined to an allowed room. A
// banned user sees nothing of the room. Rooms no local user is joined to
// are asked about over federation, through the via servers of the child
// event that names them; one answer describes a space and its direct
// children, so a remote child that is no space needs no request of its
// own. An unknown root, or one the requester may not see, answers 403
// M_FORBIDDEN: the spec lists "the room does not exist" among the reasons
// for 403, and one answer for both reveals nothing of private rooms.
//
// Pagination: the position of a walk (the rooms still to visit, those
// visited, and what remote servers said of rooms not yet visited) stays
// in memory on this server, under a random next_batch token, for
// hierarchySessionLifetime. Every page stores a new position, so asking
// for a page twice gives the same answer. Positions are lost on restart;
// a token that is unknown, expired, of another user or root, or asked
// with another max_depth or suggested_only answers 400 M_INVALID_PARAM.
// A token keeps its view of the rooms already visited; the rooms' own
// summaries are read afresh when each is visited.

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	// defaultHierarchyDepth is both the default and the cap of max_depth
	// (spec: servers should impose both).
	defaultHierarchyDepth = 50
	// hierarchySessionLifetime is how long a next_batch token stays valid.
	hierarchySessionLifetime = 5 * time.Minute
	// maxHierarchySessions bounds the walk positions held in memory; the
	// one closest to expiring makes way for a new one.
	maxHierarchySessions = 1000
	// maxHierarchyFetches bounds the federation requests of one page: a
	// space full of rooms on unreachable servers ends the page early (with
	// a next_batch) rather than holding the client for minutes.
	maxHierarchyFetches = 10
	// hierarchyFetchTimeout bounds asking the servers about one room.
	hierarchyFetchTimeout = 15 * time.Second
)

// hierarchyEntry is a room still to visit.
type hierarchyEntry struct {
	roomID string
	depth  int
	via    []spec.ServerName
}

// hierarchyWalk is the position of one walk of a space tree.
type hierarchyWalk struct {
	userID        string
	root          string
	maxDepth      int
	suggestedOnly bool
	// stack holds the rooms still to visit; the next one is last.
	stack []hierarchyEntry
	// seen holds the rooms visited (shown or not), so that a room in two
	// spaces shows once and a loop of spaces ends.
	seen map[string]bool
	// remote holds what other servers said of the children of the remote
	// spaces visited, and inaccessible the children they said are closed
	// to this server: a remote child then needs no request of its own.
	remote       map[string]roomdir.HierarchyRoom
	inaccessible map[string]bool
}

func (w *hierarchyWalk) clone() *hierarchyWalk {
	c := *w
	c.stack = slices.Clone(w.stack)
	c.seen = maps.Clone(w.seen)
	c.remote = maps.Clone(w.remote)
	c.inaccessible = maps.Clone(w.inaccessible)
	return &c
}

// hierarchySessions holds walk positions under their next_batch tokens.
type hierarchySessions struct {
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]hierarchySession
}

type hierarchySession struct {
	walk    *hierarchyWalk
	expires time.Time
}

func newHierarchySessions(now func() time.Time) *hierarchySessions {
	return &hierarchySessions{now: now, sessions: map[string]hierarchySession{}}
}

// put stores a copy of a walk's position and returns its token.
func (s *hierarchySessions) put(w *hierarchyWalk) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for tok, sess := range s.sessions {
		if now.After(sess.expires) {
			delete(s.sessions, tok)
		}
	}
	for len(s.sessions) >= maxHierarchySessions {
		var oldest string
		for tok, sess := range s.sessions {
			if oldest == "" || sess.expires.Before(s.sessions[oldest].expires) {
				oldest = tok
			}
		}
		delete(s.sessions, oldest)
	}
	tok := accounts.NewSecret()
	s.sessions[tok] = hierarchySession{walk: w.clone(), expires: now.Add(hierarchySessionLifetime)}
	return tok
}

// get returns a copy of the walk position under a token, or nil.
func (s *hierarchySessions) get(tok string) *hierarchyWalk {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[tok]
	if !ok || s.now().After(sess.expires) {
		return nil
	}
	return sess.walk.clone()
}

// hierarchyParams are the query parameters of /hierarchy.
type hierarchyParams struct {
	from          string
	limit         int
	maxDepth      int
	depthGiven    bool
	suggestedOnly bool
	suggestGiven  bool
}

func parseHierarchyParams(r *http.Request) (hierarchyParams, error) {
	q := r.URL.Query()
	p := hierarchyParams{from: q.Get("from"), limit: defaultHierarchyLimit, maxDepth: defaultHierarchyDepth}
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		p.suggestedOnly = true
	default:
		return p, mxerr.InvalidParam("suggested_only must be true or false")
	}
	p.suggestGiven = q.Has("suggested_only")
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return p, mxerr.InvalidParam("limit must be an integer greater than zero")
		}
		p.limit = min(n, maxHierarchyLimit)
	}
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, mxerr.InvalidParam("max_depth must be a non-negative integer")
		}
		p.maxDepth, p.depthGiven = min(n, defaultHierarchyDepth), true
	}
	return p, nil
}

// hierarchy is GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
func (a *API) hierarchy(r *http.Request) (any, error) {
	roomID := r.PathValue("roomId")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("Invalid room ID")
	}
	p, err := parseHierarchyParams(r)
	if err != nil {
		return nil, err
	}
	userID := requester(r).UserID.String()
	var w *hierarchyWalk
	if p.from != "" {
		w = a.hierarchies.get(p.from)
		if w == nil || w.userID != userID || w.root != roomID {
			return nil, mxerr.InvalidParam("Unknown or expired pagination token")
		}
		if (p.depthGiven && p.maxDepth != w.maxDepth) || (p.suggestGiven && p.suggestedOnly != w.suggestedOnly) {
			return nil, mxerr.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
	} else {
		w = &hierarchyWalk{
			userID: userID, root: roomID, maxDepth: p.maxDepth, suggestedOnly: p.suggestedOnly,
			// A root held elsewhere is asked of the servers a join would
			// try: those in the room, whoever invited the user, the room
			// ID's own server.
			stack: []hierarchyEntry{{roomID: roomID, via: a.joinServers(r, roomID, nil)}},
			seen:  map[string]bool{}, remote: map[string]roomdir.HierarchyRoom{}, inaccessible: map[string]bool{},
		}
	}

	ctx := r.Context()
	rooms := []roomdir.SpaceRoom{}
	fetches := 0
	for len(w.stack) > 0 && len(rooms) < p.limit && fetches < maxHierarchyFetches {
		e := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		if w.seen[e.roomID] {
			continue
		}
		w.seen[e.roomID] = true
		room, fetched, err := a.hierarchyRoom(ctx, w, e)
		if fetched {
			fetches++
		}
		if err != nil {
			return nil, err
		}
		if room == nil {
			if e.depth == 0 {
				return nil, mxerr.Forbidden("You are not allowed to view this room.")
			}
			continue
		}
		rooms = append(rooms, *room)
		if e.depth >= w.maxDepth {
			continue
		}
		for i := len(room.ChildrenState) - 1; i >= 0; i-- {
			c := room.ChildrenState[i]
			if w.seen[c.StateKey] {
				continue
			}
			via, _, _ := roomdir.ChildVia(c.Content)
			w.stack = append(w.stack, hierarchyEntry{roomID: c.StateKey, depth: e.depth + 1, via: via})
		}
	}
	resp := struct {
		Rooms     []roomdir.SpaceRoom `json:"rooms"`
		NextBatch string              `json:"next_batch,omitempty"`
	}{Rooms: rooms}
	// Rooms already seen left on the stack need no further page.
	w.stack = slices.DeleteFunc(w.stack, func(e hierarchyEntry) bool { return w.seen[e.roomID] })
	if len(w.stack) > 0 {
		resp.NextBatch = a.hierarchies.put(w)
	}
	return resp, nil
}

// hierarchyRoom describes a room of the walk as the requester may see it
// (nil when they may not, or nobody reachable knows the room), with its
// children when it is a space. fetched reports whether it asked another
// server.
func (a *API) hierarchyRoom(ctx context.Context, w *hierarchyWalk, e hierarchyEntry) (room *roomdir.SpaceRoom, fetched bool, err error) {
	membership := ""
	stored, err := a.rs.Room(ctx, e.roomID)
	if err == nil {
		d, err := roomdir.DescribeForHierarchy(ctx, a.db, stored, a.accounts.ServerName())
		if err != nil {
			return nil, false, err
		}
		for _, m := range d.Members {
			if m.UserID == w.userID {
				membership = m.Membership
			}
		}
		if d.Held {
			ok, err := a.hierarchyVisible(ctx, w.userID, d.HierarchyRoom, membership)
			if err != nil || !ok {
				return nil, false, err
			}
			out := &roomdir.SpaceRoom{HierarchyRoom: d.HierarchyRoom, ChildrenState: []roomdir.ChildState{}}
			if d.RoomType == roomdir.SpaceRoomType {
				if out.ChildrenState, err = roomdir.SpaceChildren(ctx, a.db, stored, w.suggestedOnly); err != nil {
					return nil, false, err
				}
			}
			return out, false, nil
		}
	}

	// Held by other servers only.
	if w.inaccessible[e.roomID] {
		return nil, false, nil
	}
	if s, ok := w.remote[e.roomID]; ok && (s.RoomType != roomdir.SpaceRoomType || e.depth >= w.maxDepth) {
		// Its parent's answer described it, and its children are not
		// wanted.
		ok, err := a.hierarchyVisible(ctx, w.userID, s, membership)
		if err != nil || !ok {
			return nil, false, err
		}
		return &roomdir.SpaceRoom{HierarchyRoom: s, ChildrenState: []roomdir.ChildState{}}, false, nil
	}
	if a.fed == nil || len(e.via) == 0 {
		return nil, false, nil
	}
	fctx, cancel := context.WithTimeout(ctx, hierarchyFetchTimeout)
	resp, err := a.fed.Hierarchy(fctx, e.roomID, e.via, w.suggestedOnly)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		// Unreachable, or closed to this server: the room is left out,
		// as an unknown one is.
		httpapi.Logger(ctx).WithError(err).WithField("room_id", e.roomID).Debug("Space hierarchy: no server described the room")
		return nil, true, nil
	}
	for _, c := range resp.Children {
		if _, err := spec.NewRoomID(c.RoomID); err == nil {
			w.remote[c.RoomID] = c
		}
	}
	for _, id := range resp.InaccessibleChildren {
		w.inaccessible[id] = true
	}
	ok, err := a.hierarchyVisible(ctx, w.userID, resp.Room.HierarchyRoom, membership)
	if err != nil || !ok {
		return nil, true, err
	}
	out := &roomdir.SpaceRoom{HierarchyRoom: resp.Room.HierarchyRoom, ChildrenState: []roomdir.ChildState{}}
	if out.RoomType == roomdir.SpaceRoomType {
		out.ChildrenState = roomdir.ValidChildren(resp.Room.ChildrenState, w.suggestedOnly)
	}
	return out, true, nil
}

// hierarchyVisible reports whether a user may see a room in the
// hierarchy, given their membership in it ("" when none is known here).
// The spec's list: members and invitees, rooms anyone may join or knock
// on or read, and restricted rooms whose allowed rooms the user is in.
func (a *API) hierarchyVisible(ctx context.Context, userID string, room roomdir.HierarchyRoom, membership string) (bool, error) {
	switch membership {
	case spec.Join, spec.Invite:
		return true, nil
	case spec.Ban:
		return false, nil
	}
	if room.OpenToAll() {
		return true, nil
	}
	for _, allowed := range room.AllowedRoomIDs {
		ar, err := a.rs.Room(ctx, allowed)
		if err != nil {
			continue
		}
		m, _, err := a.db.CurrentMembership(ctx, ar.NID, userID)
		if err != nil {
			return false, err
		}
		if m == spec.Join {
			return true, nil
		}
	}
	return false, nil
}
