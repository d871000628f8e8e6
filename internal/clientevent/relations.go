package clientevent

import (
	"context"
	"slices"
	"sort"

	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// ThreadSummary is the m.thread aggregation of a thread root.
type ThreadSummary struct {
	LatestEvent             *Event `json:"latest_event"`
	Count                   int64  `json:"count"`
	CurrentUserParticipated bool   `json:"current_user_participated"`
}

// References is the m.reference aggregation.
type References struct {
	Chunk []EventRef `json:"chunk"`
}

// EventRef names an event in an aggregation.
type EventRef struct {
	EventID string `json:"event_id"`
}

// aggregations are the bundled aggregations of one page of events, all
// restricted to children the reader may see and not sent by users the
// reader ignores.
type aggregations struct {
	// edits maps an event to its most recent valid edit. It covers the
	// page's events and the latest events of their threads, whose edits
	// the spec also wants bundled.
	edits   map[string]*roomserver.Event
	threads map[string]*thread
	refs    map[string][]*roomserver.Event
}

type thread struct {
	latest *roomserver.Event
	count  int64
	mine   bool
}

// eventIDs lists the aggregated events, whose transaction IDs the
// sender's device should see as on any event.
func (a *aggregations) eventIDs() []string {
	var ids []string
	for _, e := range a.edits {
		ids = append(ids, e.EventID())
	}
	for _, t := range a.threads {
		ids = append(ids, t.latest.EventID())
	}
	return ids
}

// bundle builds unsigned["m.relations"] for e, or nil.
func (a *aggregations) bundle(e *roomserver.Event, render func(*roomserver.Event) *Event) map[string]any {
	id := e.EventID()
	m := map[string]any{}
	if edit := a.edits[id]; edit != nil {
		m[storage.RelReplace] = render(edit)
	}
	if t := a.threads[id]; t != nil {
		m[storage.RelThread] = &ThreadSummary{LatestEvent: render(t.latest), Count: t.count, CurrentUserParticipated: t.mine}
	}
	if refs := a.refs[id]; len(refs) > 0 {
		r := &References{Chunk: make([]EventRef, len(refs))}
		for i, c := range refs {
			r.Chunk[i] = EventRef{EventID: c.EventID()}
		}
		m[storage.RelReference] = r
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// readerID is the full user ID of the reader.
func (f *Formatter) readerID(o Options) string {
	if o.UserID != "" || o.Localpart == "" {
		return o.UserID
	}
	return "@" + o.Localpart + ":" + string(f.RS.ServerName())
}

// aggregate loads the bundled aggregations of a page of events: one
// query for the ignore list, one for threads and references, one for
// edits (of the page's events and of their threads' latest events), and
// a visibility check of each group of children (see
// storage.ChildGroup: one representative per state snapshot pair, so the
// roomserver's per-snapshot cache makes that a few lookups, not one per
// child).
func (f *Formatter) aggregate(ctx context.Context, room storage.Room, events []*roomserver.Event, o Options) (*aggregations, error) {
	agg := &aggregations{
		edits: map[string]*roomserver.Event{}, threads: map[string]*thread{}, refs: map[string][]*roomserver.Event{},
	}
	// State events get no bundled aggregations (spec warning in
	// "Aggregations of child events").
	byID := map[string]*roomserver.Event{}
	var parents []string
	for _, e := range events {
		if !e.IsState() && byID[e.EventID()] == nil {
			byID[e.EventID()] = e
			parents = append(parents, e.EventID())
		}
	}
	if len(parents) == 0 {
		return agg, nil
	}
	// Most pages relate to nothing: one index lookup decides whether the
	// aggregation queries are needed at all, and for which parents.
	having, err := f.DB.ParentsWithChildren(ctx, parents)
	if err != nil {
		return nil, err
	}
	parents = slices.DeleteFunc(parents, func(id string) bool { return !having[id] })
	if len(parents) == 0 {
		return agg, nil
	}
	me := f.readerID(o)
	ignoredSet := o.Ignored
	if ignoredSet == nil {
		if ignoredSet, err = f.DB.IgnoredUsers(ctx, o.Localpart); err != nil {
			return nil, err
		}
	}
	ignored := make([]string, 0, len(ignoredSet))
	for u := range ignoredSet {
		ignored = append(ignored, u)
	}

	groups, err := f.DB.ThreadsAndReferences(ctx, room.NID, parents, me, ignored)
	if err != nil {
		return nil, err
	}
	if len(groups) > 0 {
		rows := make([]storage.EventRow, len(groups))
		for i, g := range groups {
			rows[i] = g.Latest
		}
		visible, err := f.visible(ctx, room, me, rows)
		if err != nil {
			return nil, err
		}
		for i, g := range groups {
			e := visible[rows[i].NID]
			if e == nil {
				continue
			}
			switch e.RelType {
			case storage.RelThread:
				t := agg.threads[e.RelatesTo]
				if t == nil {
					t = &thread{}
					agg.threads[e.RelatesTo] = t
				}
				t.count += g.Count
				t.mine = t.mine || g.Mine
				if t.latest == nil || topoLess(t.latest, e) {
					t.latest = e
				}
			case storage.RelReference:
				agg.refs[e.RelatesTo] = append(agg.refs[e.RelatesTo], e)
			}
		}
	}
	editParents := parents
	for root, t := range agg.threads {
		// The thread's starter participates too (spec).
		if r := byID[root]; r != nil && string(r.SenderID()) == me {
			t.mine = true
		}
		editParents = append(editParents, t.latest.EventID())
	}
	for _, refs := range agg.refs {
		sort.Slice(refs, func(i, j int) bool { return topoLess(refs[i], refs[j]) })
	}

	rows, err := f.DB.LatestEdits(ctx, room.NID, editParents, ignored)
	if err != nil {
		return nil, err
	}
	visible, err := f.visible(ctx, room, me, rows)
	if err != nil {
		return nil, err
	}
	for _, e := range visible {
		if cur := agg.edits[e.RelatesTo]; cur == nil || newerEdit(e, cur) {
			agg.edits[e.RelatesTo] = e
		}
	}
	return agg, nil
}

// visible parses rows and keeps those userID may see, by numeric ID.
func (f *Formatter) visible(ctx context.Context, room storage.Room, userID string, rows []storage.EventRow) (map[int64]*roomserver.Event, error) {
	out := map[int64]*roomserver.Event{}
	if len(rows) == 0 {
		return out, nil
	}
	evs, err := f.RS.EventRows(room, rows)
	if err != nil {
		return nil, err
	}
	evs, err = f.RS.FilterVisible(ctx, room, userID, evs)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		out[e.NID] = e
	}
	return out, nil
}

// newerEdit orders edits as the spec does: by origin_server_ts, then by
// the lexicographically larger event ID.
func newerEdit(a, b *roomserver.Event) bool {
	if a.OriginServerTS() != b.OriginServerTS() {
		return a.OriginServerTS() > b.OriginServerTS()
	}
	return a.EventID() > b.EventID()
}

// topoLess reports whether a comes before b in the room's topological
// order (depth, then stream position).
func topoLess(a, b *roomserver.Event) bool {
	if a.Depth() != b.Depth() {
		return a.Depth() < b.Depth()
	}
	return a.StreamPos < b.StreamPos
}
