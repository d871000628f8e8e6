package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/clientevent"
	"github.com/veche/veche/internal/filter"
	"github.com/veche/veche/pushrules"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

func newResponse(pos, typingPos int64) *Response {
	return &Response{
		NextBatch: makeToken(pos, typingPos),
		Rooms: rooms{
			Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{},
			Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{},
		},
		AccountData: eventList{Events: []any{}}, Presence: eventList{Events: []any{}}, ToDevice: eventList{Events: []any{}},
		DeviceLists: deviceLists{Changed: []string{}, Left: []string{}}, OTKCounts: map[string]int{},
		FallbackKeyTypes: []string{},
	}
}

type accountDataEvent struct {
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// build computes the response for (since, pos].
func (s *Sync) build(ctx context.Context, req *request, pos int64) (*Response, error) {
	typingPos := s.typing.Position()
	resp := newResponse(pos, typingPos)
	userID := req.user.UserID.String()
	ignored, err := s.db.IgnoredUsers(ctx, req.user.Localpart())
	if err != nil {
		return nil, err
	}
	req.ignored = ignored
	if err := s.toDevice(ctx, req, pos, resp); err != nil {
		return nil, err
	}

	data, err := s.db.AccountDataSince(ctx, req.user.Localpart(), req.since, pos)
	if err != nil {
		return nil, err
	}
	roomData := map[string][]any{}
	sawPushRules := false
	for _, d := range data {
		ev := accountDataEvent{Type: d.Type, Content: d.Content}
		if d.RoomID == "" && d.Type == pushrules.AccountDataType {
			// Stored are only the user's changes; clients get the whole
			// ruleset, current defaults included.
			sawPushRules = true
			if ev.Content, err = json.Marshal(pushrules.ForUser(d.Content, userID, "")); err != nil {
				return nil, err
			}
		}
		if d.RoomID == "" {
			if req.filter.AccountData.Match(d.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
			continue
		}
		var rf *filter.RoomEventFilter
		if req.filter.Room != nil {
			rf = req.filter.Room.AccountData
		}
		if rf == nil || rf.EventFilter.Match(d.Type, "") {
			roomData[d.RoomID] = append(roomData[d.RoomID], ev)
		}
	}

	stored, err := s.db.AccountDataEntry(ctx, req.user.Localpart(), "", pushrules.AccountDataType)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	req.pushRules = &unreadInput{userID: userID, ignored: req.ignored, rules: pushrules.ForUser(stored, userID, ""), rulesRaw: string(stored)}
	if req.initial && !sawPushRules && req.filter.AccountData.Match(pushrules.AccountDataType, "") {
		// A user who never changed a rule still has the defaults.
		content, err := json.Marshal(pushrules.ForUser(nil, userID, ""))
		if err != nil {
			return nil, err
		}
		resp.AccountData.Events = append(resp.AccountData.Events, accountDataEvent{Type: pushrules.AccountDataType, Content: content})
	}

	memberships, err := s.db.RoomsOfUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	receipts, err := s.receipts(ctx, req, memberships, pos)
	if err != nil {
		return nil, err
	}
	// An incremental sync looks only at rooms where something happened:
	// one query finds the rooms with new events, instead of a query per
	// room the user is in.
	var active map[int64]bool
	if !req.initial && !req.fullState {
		var joinedNIDs []int64
		for _, m := range memberships {
			if m.Membership == spec.Join {
				joinedNIDs = append(joinedNIDs, m.RoomNID)
			}
		}
		if active, err = s.db.RoomsWithEvents(ctx, joinedNIDs, req.since, pos); err != nil {
			return nil, err
		}
	}
	var work errgroup
	work.limit = make(chan struct{}, roomWorkers)
	var joinedMu sync.Mutex
	for _, m := range memberships {
		if !roomAllowed(req.filter.Room, m.RoomID) {
			continue
		}
		if active != nil && m.Membership == spec.Join && !active[m.RoomNID] && len(receipts[m.RoomNID]) == 0 &&
			len(roomData[m.RoomID]) == 0 && !s.typing.Changed(m.RoomID, req.sinceTyping) {
			continue // nothing new here, and the join itself is older (else the room has an event)
		}
		room := m.Room
		memberEvs, err := s.rs.Events(ctx, room, []int64{m.EventNID})
		if err != nil || len(memberEvs) == 0 {
			return nil, err
		}
		memberEv := memberEvs[0]
		if memberEv.StreamPos > pos {
			continue // changed after this response's position: the next one tells
		}
		changed := !req.initial && memberEv.StreamPos > req.since
		switch m.Membership {
		case spec.Join:
			// Joined rooms are independent of each other: render them in
			// parallel (reads run side by side on the database).
			work.Go(func() error {
				jr, err := s.joinedRoom(ctx, req, room, memberEv, pos, roomData[room.RoomID], receipts[room.NID])
				if err != nil || jr == nil {
					return err
				}
				joinedMu.Lock()
				resp.Rooms.Join[room.RoomID] = jr
				joinedMu.Unlock()
				return nil
			})
		case spec.Invite:
			if req.ignored[string(memberEv.SenderID())] {
				continue // invites from ignored users are never shown (spec)
			}
			if req.initial || changed {
				ir := &invitedRoom{}
				if ir.InviteState.Events, err = s.strippedState(ctx, room, memberEv); err != nil {
					return nil, err
				}
				resp.Rooms.Invite[room.RoomID] = ir
			}
		case spec.Knock:
			if req.initial || changed {
				kr := &knockedRoom{}
				if kr.KnockState.Events, err = s.strippedState(ctx, room, memberEv); err != nil {
					return nil, err
				}
				resp.Rooms.Knock[room.RoomID] = kr
			}
		case spec.Leave, spec.Ban:
			includeLeave := req.filter.Room != nil && req.filter.Room.IncludeLeave
			if changed || (req.initial && includeLeave) || (req.fullState && includeLeave) {
				lr, err := s.leftRoom(ctx, req, room, memberEv, roomData[room.RoomID])
				if err != nil {
					return nil, err
				}
				resp.Rooms.Leave[room.RoomID] = lr
			}
		}
	}
	if err := work.Wait(); err != nil {
		return nil, err
	}
	if err := s.presenceSection(ctx, req, pos, resp); err != nil {
		return nil, err
	}
	if err := s.e2eeSections(ctx, req, pos, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// roomWorkers bounds how many rooms one response renders at once.
const roomWorkers = 4

// errgroup runs functions concurrently (at most cap(limit) at a time) and
// reports the first error.
type errgroup struct {
	wg    sync.WaitGroup
	limit chan struct{}
	mu    sync.Mutex
	err   error
}

func (g *errgroup) Go(fn func() error) {
	g.wg.Add(1)
	g.limit <- struct{}{}
	go func() {
		defer func() { <-g.limit; g.wg.Done() }()
		if err := fn(); err != nil {
			g.mu.Lock()
			if g.err == nil {
				g.err = err
			}
			g.mu.Unlock()
		}
	}()
}

func (g *errgroup) Wait() error {
	g.wg.Wait()
	return g.err
}

func timelineFilter(f *filter.Filter) *filter.RoomEventFilter {
	if f.Room != nil && f.Room.Timeline != nil {
		return f.Room.Timeline
	}
	return nil
}

func stateFilter(f *filter.Filter) *filter.RoomEventFilter {
	if f.Room != nil && f.Room.State != nil {
		return f.Room.State
	}
	return nil
}

func timelineLimit(f *filter.Filter) int {
	if tf := timelineFilter(f); tf != nil && tf.Limit != nil {
		return min(*tf.Limit, maxTimelineLimit)
	}
	return defaultTimelineLimit
}

// joinedRoom renders a joined room, or nil when nothing changed in it.
func (s *Sync) joinedRoom(ctx context.Context, req *request, room storage.Room, memberEv *roomserver.Event, pos int64, accountData []any, receipts []storage.Receipt) (*joinedRoom, error) {
	fresh := req.initial || req.fullState || memberEv.StreamPos > req.since
	after := req.since
	if fresh {
		after = 0
	}
	tl, firstEvent, err := s.timeline(ctx, req, room, after, pos)
	if err != nil {
		return nil, err
	}
	ephemeral := s.ephemeral(req, room, fresh, receipts)
	if !fresh && len(tl.Events) == 0 && len(accountData) == 0 && len(ephemeral) == 0 {
		return nil, nil
	}
	jr := &joinedRoom{Timeline: *tl, Ephemeral: eventList{Events: ephemeral}, AccountData: eventList{Events: accountData}}
	unread, err := s.unread.counts(ctx, s, room, req.unreadInput(), memberEv.StreamPos, pos)
	if err != nil {
		return nil, err
	}
	counts := unread.Total
	if tf := timelineFilter(req.filter); tf != nil && tf.UnreadThreadNotifications {
		counts = unread.Main
		if len(unread.Threads) > 0 {
			jr.UnreadThreadNotifications = map[string]unreadCounts{}
			for root, c := range unread.Threads {
				jr.UnreadThreadNotifications[root] = unreadCounts{HighlightCount: c.Highlights, NotificationCount: c.Notifications}
			}
		}
	}
	jr.UnreadNotifications = unreadCounts{HighlightCount: counts.Highlights, NotificationCount: counts.Notifications}
	if jr.AccountData.Events == nil {
		jr.AccountData.Events = []any{}
	}
	// State up to the start of the timeline: all of it for a room new to
	// the client, the changes since its last sync when the timeline had
	// gaps, nothing otherwise (the timeline carries the changes).
	startSnap := room.StateNID
	if firstEvent != nil {
		startSnap = firstEvent.StateBeforeNID
	}
	var state []*roomserver.Event
	switch {
	case fresh:
		if state, err = s.rs.StateAt(ctx, room, startSnap); err != nil {
			return nil, err
		}
	case tl.Limited:
		if state, err = s.stateDelta(ctx, room, req.since, startSnap); err != nil {
			return nil, err
		}
	}
	state = s.filterState(req, state, tl, memberEv)
	if jr.State.Events, err = s.format.Format(ctx, room, state, s.stateOptions(req)); err != nil {
		return nil, err
	}
	if fresh || hasMembershipEvents(tl) {
		if jr.Summary, err = s.summary(ctx, room, *memberEv.StateKey()); err != nil {
			return nil, err
		}
	}
	return jr, nil
}

func hasMembershipEvents(tl *timeline) bool {
	for _, e := range tl.Events {
		if e.Type == spec.MRoomMember {
			return true
		}
	}
	return false
}

// timeline loads the newest visible events in (after, upTo], oldest first.
func (s *Sync) timeline(ctx context.Context, req *request, room storage.Room, after, upTo int64) (*timeline, *roomserver.Event, error) {
	limit := timelineLimit(req.filter)
	tf := timelineFilter(req.filter)
	userID := req.user.UserID.String()
	var picked []*roomserver.Event // newest first
	limited := false
	cursor := upTo
	// Visibility and filters drop events after the query, so read in
	// rounds until one event beyond the limit shows there are more.
scan:
	for round := 0; round < 10; round++ {
		rows, err := s.db.RoomEventsStream(ctx, room.NID, after, cursor, limit+1)
		if err != nil {
			return nil, nil, err
		}
		if len(rows) == 0 {
			break
		}
		evs, err := s.rs.EventRows(room, rows)
		if err != nil {
			return nil, nil, err
		}
		visible, err := s.rs.FilterVisible(ctx, room, userID, evs)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range visible {
			if !tf.Match(e.Type(), string(e.SenderID()), e.Content()) || (req.ignored[string(e.SenderID())] && !e.IsState()) {
				continue
			}
			if len(picked) == limit {
				limited = true
				break scan
			}
			picked = append(picked, e)
		}
		cursor = rows[len(rows)-1].StreamPos - 1
		if len(rows) <= limit {
			break // the window has nothing older
		}
	}
	slices.Reverse(picked)
	tl := &timeline{Limited: limited}
	var first *roomserver.Event
	if len(picked) > 0 {
		first = picked[0]
		tl.PrevBatch = topoToken(first)
	} else {
		tl.PrevBatch = makeToken(upTo, 0)
	}
	// Bundled aggregations cost queries; clients need them only where the
	// timeline skipped events whose children they never saw (spec).
	opts := s.formatOptions(req)
	opts.NoAggregations = !limited
	events, err := s.format.Format(ctx, room, picked, opts)
	if err != nil {
		return nil, nil, err
	}
	tl.Events = events
	return tl, first, nil
}

func topoToken(e *roomserver.Event) string {
	return "t" + itoa(e.Depth()) + "_" + itoa(e.StreamPos)
}

// stateDelta returns the state at snapshot `to` that differs from the
// state the client had at stream position since.
func (s *Sync) stateDelta(ctx context.Context, room storage.Room, since int64, to int64) ([]*roomserver.Event, error) {
	var fromSnap int64
	if row, err := s.db.LastEventAtOrBefore(ctx, room.NID, since); err == nil {
		fromSnap = row.StateAfterNID
	}
	before, err := s.db.Snapshot(ctx, fromSnap)
	if err != nil {
		return nil, err
	}
	now, err := s.db.Snapshot(ctx, to)
	if err != nil {
		return nil, err
	}
	var nids []int64
	for k, nid := range now {
		if before[k] != nid {
			nids = append(nids, nid)
		}
	}
	return s.rs.Events(ctx, room, nids)
}

// filterState applies the state filter and lazy loading of members: only
// the members who sent timeline events, and the user's own.
func (s *Sync) filterState(req *request, state []*roomserver.Event, tl *timeline, self *roomserver.Event) []*roomserver.Event {
	sf := stateFilter(req.filter)
	lazy := sf != nil && sf.LazyLoadMembers
	senders := map[string]bool{string(self.SenderID()): true, *self.StateKey(): true}
	for _, e := range tl.Events {
		senders[e.Sender] = true
	}
	inTimeline := map[string]bool{}
	for _, e := range tl.Events {
		inTimeline[e.EventID] = true
	}
	out := state[:0:0]
	for _, e := range state {
		if inTimeline[e.EventID()] || !sf.Match(e.Type(), string(e.SenderID()), e.Content()) {
			continue
		}
		if lazy && e.Type() == spec.MRoomMember && !senders[*e.StateKey()] {
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].StreamPos != out[j].StreamPos {
			return out[i].StreamPos < out[j].StreamPos
		}
		return out[i].EventID() < out[j].EventID()
	})
	return out
}

// summary gives the counts and heroes clients name rooms with.
func (s *Sync) summary(ctx context.Context, room storage.Room, self string) (*summary, error) {
	members, err := s.db.Members(ctx, room.NID)
	if err != nil {
		return nil, err
	}
	sum := &summary{}
	var heroes, leftHeroes []string
	for _, m := range members {
		switch m.Membership {
		case spec.Join:
			sum.JoinedCount++
		case spec.Invite:
			sum.InvitedCount++
		}
		if m.UserID == self {
			continue
		}
		switch m.Membership {
		case spec.Join, spec.Invite:
			heroes = append(heroes, m.UserID)
		case spec.Leave, spec.Ban:
			leftHeroes = append(leftHeroes, m.UserID)
		}
	}
	// Spec: up to 5 heroes, joined/invited members first, then former ones.
	heroes = append(heroes, leftHeroes...)
	sum.Heroes = heroes[:min(len(heroes), 5)]
	return sum, nil
}

// leftRoom renders a room the user left or was banned from, with the
// timeline up to that moment.
func (s *Sync) leftRoom(ctx context.Context, req *request, room storage.Room, memberEv *roomserver.Event, accountData []any) (*leftRoom, error) {
	after := req.since
	if req.initial || req.fullState {
		after = 0
	}
	tl, first, err := s.timeline(ctx, req, room, after, memberEv.StreamPos)
	if err != nil {
		return nil, err
	}
	lr := &leftRoom{Timeline: *tl, AccountData: eventList{Events: accountData}}
	if lr.AccountData.Events == nil {
		lr.AccountData.Events = []any{}
	}
	var state []*roomserver.Event
	startSnap := memberEv.StateBeforeNID
	if first != nil {
		startSnap = first.StateBeforeNID
	}
	if after == 0 {
		state, err = s.rs.StateAt(ctx, room, startSnap)
	} else if tl.Limited {
		state, err = s.stateDelta(ctx, room, req.since, startSnap)
	}
	if err != nil {
		return nil, err
	}
	state = s.filterState(req, state, tl, memberEv)
	if lr.State.Events, err = s.format.Format(ctx, room, state, s.stateOptions(req)); err != nil {
		return nil, err
	}
	return lr, nil
}

// strippedStateTypes are the state events an invitee or knocker sees
// (spec: "Stripped state").
var strippedStateTypes = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias,
	"m.room.encryption", spec.MRoomTopic,
}

func (s *Sync) strippedState(ctx context.Context, room storage.Room, memberEv *roomserver.Event) ([]strippedEvent, error) {
	var out []strippedEvent
	// An invite or knock over federation carries the stripped state the
	// remote server gave, since this server does not hold the room's state.
	var unsigned struct {
		Invite []strippedEvent `json:"invite_room_state"`
		Knock  []strippedEvent `json:"knock_room_state"`
	}
	if json.Unmarshal(memberEv.Unsigned(), &unsigned) == nil {
		if given := append(unsigned.Invite, unsigned.Knock...); len(given) > 0 {
			return append(given, strippedEvent{Type: memberEv.Type(), StateKey: *memberEv.StateKey(), Content: memberEv.Content(), Sender: string(memberEv.SenderID())}), nil
		}
	}
	for _, t := range strippedStateTypes {
		e, err := s.rs.StateEvent(ctx, room, t, "")
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, strippedEvent{Type: e.Type(), StateKey: "", Content: e.Content(), Sender: string(e.SenderID())})
		}
	}
	out = append(out, strippedEvent{Type: memberEv.Type(), StateKey: *memberEv.StateKey(), Content: memberEv.Content(), Sender: string(memberEv.SenderID())})
	return out, nil
}

func (s *Sync) formatOptions(req *request) clientevent.Options {
	return clientevent.Options{Localpart: req.user.Localpart(), DeviceID: req.user.DeviceID, UserID: req.user.UserID.String(),
		OmitRoomID: true, Ignored: req.ignored}
}

// stateOptions render state, which carries no aggregations.
func (s *Sync) stateOptions(req *request) clientevent.Options {
	o := s.formatOptions(req)
	o.NoAggregations = true
	return o
}

// roomAllowed applies the room filter's rooms/not_rooms.
func roomAllowed(f *filter.RoomFilter, roomID string) bool {
	if f == nil {
		return true
	}
	if len(f.Rooms) > 0 && !slices.Contains(f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// receipts loads the receipts of the user's rooms that changed in the
// window (all current ones for an initial sync), by room.
func (s *Sync) receipts(ctx context.Context, req *request, rooms []storage.UserRoom, pos int64) (map[int64][]storage.Receipt, error) {
	var nids []int64
	for _, r := range rooms {
		if r.Membership == spec.Join {
			nids = append(nids, r.RoomNID)
		}
	}
	out := map[int64][]storage.Receipt{}
	if len(nids) == 0 {
		return out, nil
	}
	list, err := s.db.ReceiptsSince(ctx, nids, req.since, pos, req.user.UserID.String())
	if err != nil {
		return nil, err
	}
	for _, r := range list {
		if req.ignored[r.UserID] {
			continue
		}
		out[r.RoomNID] = append(out[r.RoomNID], r)
	}
	return out, nil
}

// ephemeral builds a joined room's m.typing and m.receipt events.
func (s *Sync) ephemeral(req *request, room storage.Room, fresh bool, receipts []storage.Receipt) []any {
	events := []any{}
	if fresh || s.typing.Changed(room.RoomID, req.sinceTyping) {
		users := []string{}
		for _, u := range s.typing.Users(room.RoomID) {
			if !req.ignored[u] {
				users = append(users, u)
			}
		}
		if len(users) > 0 || !fresh {
			events = append(events, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
	if len(receipts) > 0 {
		content := map[string]map[string]map[string]map[string]any{}
		for _, r := range receipts {
			byType := content[r.EventID]
			if byType == nil {
				byType = map[string]map[string]map[string]any{}
				content[r.EventID] = byType
			}
			if byType[r.Type] == nil {
				byType[r.Type] = map[string]map[string]any{}
			}
			info := map[string]any{"ts": r.TS}
			if r.ThreadID != "" {
				info["thread_id"] = r.ThreadID
			}
			byType[r.Type][r.UserID] = info
		}
		events = append(events, map[string]any{"type": "m.receipt", "content": content})
	}
	var f *filter.RoomEventFilter
	if req.filter.Room != nil {
		f = req.filter.Room.Ephemeral
	}
	if f == nil {
		return events
	}
	kept := []any{}
	for _, e := range events {
		if f.EventFilter.Match(e.(map[string]any)["type"].(string), "") {
			kept = append(kept, e)
		}
	}
	return kept
}
