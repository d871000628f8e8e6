package roomserver

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// This file holds the roomserver's entry points for events that come
// from other servers in ways other than a plain /send: the state and
// auth chain of a room being joined (outliers), events whose prev events
// are unknown here (input with a given state), memberships of rooms this
// server is not in (out-of-band invites, rejections and knocks), and the
// event templates of make_join, make_leave and make_knock.

// StoreOutliers stores events known without their place in the DAG: the
// auth chain and state of a room being joined, or auth events fetched to
// check another event. Each is checked against its own auth events
// (spec: "Checks performed on receipt of a PDU", step 4); events failing
// it are stored as rejected. The events may come in any order; auth
// events missing from both the batch and the database give a
// *MissingEventsError. version creates the room when it is new here.
func (rs *Roomserver) StoreOutliers(ctx context.Context, roomID string, version gomatrixserverlib.RoomVersion, events []gomatrixserverlib.PDU) ([]InputResult, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, mxerr.UnsupportedRoomVersion("Unsupported room version " + string(version))
	}
	req := &request{inputs: events, version: verImpl, run: (*actor).processOutliers}
	if _, err := rs.submit(ctx, roomID, req); err != nil {
		return nil, err
	}
	return req.results, nil
}

func (a *actor) processOutliers(req *request) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	results, err := a.storeOutliers(ctx, req.inputs)
	if err != nil {
		a.room = nil
		req.respond(nil, err)
		return
	}
	req.results = results
	req.respond(nil, nil)
}

// loadBatch indexes a batch of events from elsewhere by ID, refusing
// events of other rooms, and loads those of them already stored.
func (a *actor) loadBatch(ctx context.Context, events []gomatrixserverlib.PDU) (map[string]gomatrixserverlib.PDU, *dbLoader, []*Event, error) {
	byID := make(map[string]gomatrixserverlib.PDU, len(events))
	for _, e := range events {
		if e.RoomID().String() != a.room.id {
			return nil, nil, nil, mxerr.InvalidParam("event " + e.EventID() + " belongs to another room")
		}
		byID[e.EventID()] = e
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	loader := &dbLoader{rs: a.rs, room: a.room}
	known, err := loader.load(ctx, ids)
	return byID, loader, known, err
}

func (a *actor) storeOutliers(ctx context.Context, events []gomatrixserverlib.PDU) ([]InputResult, error) {
	room := a.room
	byID, loader, known, err := a.loadBatch(ctx, events)
	if err != nil {
		return nil, err
	}
	results := make([]InputResult, 0, len(byID))
	for _, e := range known {
		results = append(results, InputResult{EventID: e.EventID(), Status: InputDuplicate})
		delete(byID, e.EventID())
	}
	order, err := authOrder(byID)
	if err != nil {
		return nil, err
	}
	// Auth events from the database, loaded once for the whole batch.
	var outside []string
	for _, e := range order {
		for _, id := range e.AuthEventIDs() {
			if byID[id] == nil {
				outside = append(outside, id)
			}
		}
	}
	if _, err := loader.load(ctx, outside); err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range outside {
		if loader.known(id) == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingEventsError{Auth: missingOf(missing, nil)}
	}
	// Check each against its auth events, in auth order, then store them
	// all at once: a join's state is tens of thousands of events.
	rows := make([]storage.EventRow, 0, len(order))
	stored := make(map[string]*Event, len(order))
	pending := make([]InputResult, 0, len(order))
	for _, pdu := range order {
		e := &Event{PDU: pdu, RoomNID: room.nid, Status: storage.EventOutlier}
		reason := a.checkAuthEvents(pdu, loader)
		if reason != "" {
			e.Status = storage.EventRejected
		}
		e.RelatesTo, e.RelType = relation(pdu.Content())
		rows = append(rows, storage.EventRow{
			RoomNID: room.nid, EventID: pdu.EventID(), Type: pdu.Type(), StateKey: pdu.StateKey(), Sender: string(pdu.SenderID()),
			Depth: pdu.Depth(), OriginServerTS: int64(pdu.OriginServerTS()), Status: e.Status, RejectionReason: reason,
			RelatesTo: e.RelatesTo, RelType: e.RelType, JSON: pdu.JSON(),
		})
		loader.with(e)
		stored[pdu.EventID()] = e
		res := InputResult{EventID: pdu.EventID()}
		if reason != "" {
			res.Status, res.Reason = InputRejected, reason
		}
		pending = append(pending, res)
	}
	var nids map[string]int64
	err = a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		var err error
		nids, err = tx.InsertOutliers(ctx, room.nid, rows)
		return err
	})
	for _, res := range pending {
		if nid, ok := nids[res.EventID]; ok {
			stored[res.EventID].NID = nid
			results = append(results, res)
		}
	}
	return results, err
}

// checkAuthEvents runs the auth rules against an event's own auth events
// (all loaded), returning why it fails or "".
func (a *actor) checkAuthEvents(pdu gomatrixserverlib.PDU, loader *dbLoader) string {
	view := &stateView{base: map[tuple]*Event{}}
	for _, id := range pdu.AuthEventIDs() {
		e := loader.known(id)
		if e == nil {
			return "auth event " + id + " is unknown"
		}
		if e.Status == storage.EventRejected {
			return "auth event " + id + " was rejected"
		}
		if e.IsState() {
			view.base[e.Tuple()] = e
		}
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{view}, userIDForSender); err != nil {
		return "not allowed by its auth events: " + err.Error()
	}
	return ""
}

// authOrder sorts events so that each comes after the auth events among
// them.
func authOrder(byID map[string]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	return topoOrder(byID, gomatrixserverlib.PDU.AuthEventIDs)
}

// topoOrder sorts events so that each comes after those of its deps that
// are among them: by depth first (a cheap, usually right order), then a
// topological pass that refuses cycles.
func topoOrder(byID map[string]gomatrixserverlib.PDU, deps func(gomatrixserverlib.PDU) []string) ([]gomatrixserverlib.PDU, error) {
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := byID[ids[i]], byID[ids[j]]
		if a.Depth() != b.Depth() {
			return a.Depth() < b.Depth()
		}
		return ids[i] < ids[j]
	})
	const (
		unvisited = iota
		visiting
		done
	)
	mark := make(map[string]int, len(ids))
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	type frame struct {
		id   string
		deps []string
		next int
	}
	// Iterative depth-first search: histories can be thousands deep.
	for _, root := range ids {
		if mark[root] != unvisited {
			continue
		}
		stack := []frame{{id: root, deps: deps(byID[root])}}
		mark[root] = visiting
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(top.deps) {
				dep := top.deps[top.next]
				top.next++
				if byID[dep] == nil {
					continue
				}
				switch mark[dep] {
				case visiting:
					return nil, mxerr.BadJSON("events form a cycle at " + dep)
				case unvisited:
					mark[dep] = visiting
					stack = append(stack, frame{id: dep, deps: deps(byID[dep])})
				}
				continue
			}
			mark[top.id] = done
			out = append(out, byID[top.id])
			stack = stack[:len(stack)-1]
		}
	}
	return out, nil
}

// InputWithState runs one event whose prev events are unknown here, with
// the state before it as another server reported it (state_ids at the
// event, or a send_join response). Every state event must be stored,
// outliers included (see StoreOutliers). The event then becomes a
// forward extremity; in a room new to this server it starts the DAG.
//
// parsed may carry state events the caller has parsed (and verified)
// already, which saves parsing their stored JSON again.
func (rs *Roomserver) InputWithState(ctx context.Context, roomID string, pdu gomatrixserverlib.PDU, stateIDs []string, parsed ...gomatrixserverlib.PDU) (InputResult, error) {
	if stateIDs == nil {
		stateIDs = []string{}
	}
	req := &request{inputs: []gomatrixserverlib.PDU{pdu}, run: func(a *actor, r *request) {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		defer cancel()
		res, err := a.inputOne(ctx, pdu, stateIDs, parsed...)
		if err != nil {
			a.room = nil
			r.respond(nil, err)
			return
		}
		r.results = []InputResult{res}
		r.respond(nil, nil)
	}}
	if _, err := rs.submit(ctx, roomID, req); err != nil {
		return InputResult{}, err
	}
	return req.results[0], nil
}

// StoreOutOfBand records a membership event of a local user in a room
// this server is not in: an invite received over federation, the leave
// that rejects it, or a knock. It has no place in a DAG we do not hold;
// it gets a stream position and becomes the user's membership in the
// room, so that sync shows it. A room whose DAG we hold takes the event
// through Input instead.
func (rs *Roomserver) StoreOutOfBand(ctx context.Context, version gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU) (*Event, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, mxerr.UnsupportedRoomVersion("Unsupported room version " + string(version))
	}
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return nil, mxerr.InvalidParam("only membership events are stored out of band")
	}
	var stored *Event
	req := &request{version: verImpl, run: func(a *actor, r *request) {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		defer cancel()
		e, err := a.storeOutOfBand(ctx, pdu)
		if err != nil {
			a.room = nil
		}
		stored = e
		r.respond(nil, err)
	}}
	if _, err := rs.submit(ctx, pdu.RoomID().String(), req); err != nil {
		return nil, err
	}
	return stored, nil
}

func (a *actor) storeOutOfBand(ctx context.Context, pdu gomatrixserverlib.PDU) (*Event, error) {
	room := a.room
	if len(room.extremities) > 0 {
		return nil, mxerr.InvalidParam("this server is in the room; the event must go through the DAG")
	}
	if row, err := a.rs.db.EventByID(ctx, pdu.EventID()); err == nil {
		return eventFromRow(row, room.version.Version())
	}
	e := &Event{PDU: pdu, RoomNID: room.nid, Status: storage.EventAccepted}
	pos := a.rs.stream.Reserve(1)
	err := a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		e.StreamPos = pos
		row := storage.EventRow{
			RoomNID: room.nid, EventID: pdu.EventID(), Type: pdu.Type(), StateKey: pdu.StateKey(), Sender: string(pdu.SenderID()),
			Depth: pdu.Depth(), OriginServerTS: int64(pdu.OriginServerTS()), StreamPos: pos, Status: storage.EventAccepted, JSON: pdu.JSON(),
		}
		nid, err := tx.InsertEvent(ctx, &row)
		if err != nil {
			return err
		}
		e.NID = nid
		// A full snapshot of the few out-of-band memberships we hold.
		entries := []storage.StateEntry{{Type: pdu.Type(), StateKey: *pdu.StateKey(), EventNID: nid}}
		for k, o := range room.view.base {
			if k != e.Tuple() {
				entries = append(entries, storage.StateEntry{Type: k.EventType, StateKey: k.StateKey, EventNID: o.NID})
			}
		}
		snap, err := tx.InsertSnapshot(ctx, room.nid, 0, 1, len(entries), entries)
		if err != nil {
			return err
		}
		e.StateBeforeNID, e.StateAfterNID = room.snapshotNID, snap
		if err := tx.SetStateAfter(ctx, nid, snap); err != nil {
			return err
		}
		if err := tx.SetRoomState(ctx, room.nid, snap); err != nil {
			return err
		}
		room.snapshotNID = snap
		return tx.UpdateCurrentState(ctx, room.nid, []storage.CurrentStateChange{{
			Type: pdu.Type(), StateKey: *pdu.StateKey(), EventNID: nid, Membership: membershipOf(pdu),
		}})
	})
	if err != nil {
		a.rs.stream.Release(pos, 1, nil)
		return nil, err
	}
	room.view.base[e.Tuple()] = e
	a.rs.stream.Release(pos, 1, []string{*pdu.StateKey()})
	return e, nil
}

// BuildTemplate builds an event on top of the room's current DAG tip and
// state, signed by this server but not stored: the template of a
// make_join, make_leave or make_knock answer, or an invite of a remote
// user that the invitee's server must sign before it is input. It
// returns the event and the state events that authorize it, and refuses
// with M_FORBIDDEN an event the auth rules would not allow.
func (rs *Roomserver) BuildTemplate(ctx context.Context, proto gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	var (
		out  gomatrixserverlib.PDU
		auth []gomatrixserverlib.PDU
	)
	req := &request{run: func(a *actor, r *request) {
		room := a.room
		if len(room.extremities) == 0 {
			r.respond(nil, mxerr.NotFound("This server is not in the room"))
			return
		}
		prev := make([]string, 0, len(room.extremities))
		var depth int64
		for i, e := range room.extremities {
			if i < maxPrevEvents {
				prev = append(prev, e.EventID())
			}
			depth = max(depth, e.Depth())
		}
		p := proto
		p.RoomID, p.PrevEvents, p.Depth = room.id, prev, min(depth+1, 1<<53)
		eb := room.version.NewEventBuilderFromProtoEvent(&p)
		if err := eb.AddAuthEvents(authProvider{room.view}); err != nil {
			r.respond(nil, mxerr.Forbidden(err.Error()))
			return
		}
		pdu, err := eb.Build(a.rs.now(), a.rs.serverName, a.rs.key.ID, a.rs.key.PrivateKey)
		if err != nil {
			r.respond(nil, mxerr.BadJSON(fmt.Sprintf("Invalid event: %v", err)))
			return
		}
		if err := gomatrixserverlib.Allowed(pdu, authProvider{room.view}, userIDForSender); err != nil {
			r.respond(nil, mxerr.Forbidden(err.Error()))
			return
		}
		needed, err := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu}).AuthEventReferences(authProvider{room.view})
		if err == nil {
			for _, id := range needed {
				for _, e := range room.view.base {
					if e.EventID() == id {
						auth = append(auth, e.PDU)
					}
				}
			}
		}
		out = pdu
		r.respond(nil, nil)
	}}
	if _, err := rs.submit(ctx, proto.RoomID, req); err != nil {
		return nil, nil, err
	}
	return out, auth, nil
}

// StateBefore is the room state before a stored event, as event IDs
// (for /state_ids, /state and send_join answers).
func (rs *Roomserver) StateBefore(ctx context.Context, room storage.Room, eventID string) ([]*Event, error) {
	row, err := rs.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && row.RoomNID != room.NID {
		return nil, mxerr.NotFound("Unknown event " + eventID)
	}
	if err != nil {
		return nil, err
	}
	if row.Status == storage.EventOutlier || row.StateBeforeNID == 0 {
		return nil, mxerr.NotFound("The state at " + eventID + " is not known here")
	}
	return rs.StateAt(ctx, room, row.StateBeforeNID)
}

// AuthChain returns the full auth chains of the given events (not the
// events themselves), each event once.
func (rs *Roomserver) AuthChain(ctx context.Context, room storage.Room, events []gomatrixserverlib.PDU) ([]*Event, error) {
	verImpl, err := roomVersionImpl(room.Version)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*Event
	var next []string
	for _, e := range events {
		next = append(next, e.AuthEventIDs()...)
	}
	for len(next) > 0 {
		var ids []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		next = nil
		if len(ids) == 0 {
			break
		}
		rows, err := rs.db.EventsByID(ctx, ids)
		if err != nil {
			return nil, err
		}
		var mine []storage.EventRow
		for _, row := range rows {
			if row.RoomNID == room.NID {
				mine = append(mine, row)
			}
		}
		evs, err := rs.parseRows(mine, verImpl.Version())
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			out = append(out, e)
			next = append(next, e.AuthEventIDs()...)
		}
	}
	return out, nil
}

// Extremities returns the IDs of the room's forward extremities: empty
// when this server holds no DAG of the room (it is not in it, or holds
// only out-of-band memberships).
func (rs *Roomserver) Extremities(ctx context.Context, room storage.Room) ([]string, error) {
	nids, err := rs.db.ForwardExtremities(ctx, room.NID)
	if err != nil || len(nids) == 0 {
		return nil, err
	}
	rows, err := rs.db.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.EventID)
	}
	return out, nil
}

// Known reports which of the event IDs are stored in the room, with any
// status.
func (rs *Roomserver) Known(ctx context.Context, room storage.Room, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	for start := 0; start < len(ids); start += 500 {
		rows, err := rs.db.EventsByID(ctx, ids[start:min(start+500, len(ids))])
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if r.RoomNID == room.NID {
				out[r.EventID] = true
			}
		}
	}
	return out, nil
}
