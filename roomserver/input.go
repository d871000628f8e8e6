package roomserver

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver/stateres"
	"github.com/veche/veche/storage"
)

// InputStatus is what became of an input event.
type InputStatus int

const (
	// InputAccepted events entered the DAG, the stream and the state.
	InputAccepted InputStatus = iota
	// InputSoftFailed events passed the checks against their own state but
	// not against the current state: kept, but never shown or used as a
	// prev event (spec: "Soft failure").
	InputSoftFailed
	// InputRejected events failed the auth rules; they are kept for the
	// record and never used.
	InputRejected
	// InputDuplicate events were known already.
	InputDuplicate
)

func (s InputStatus) String() string {
	return [...]string{"accepted", "soft-failed", "rejected", "duplicate"}[s]
}

// InputResult reports one input event.
type InputResult struct {
	EventID string
	Status  InputStatus
	Reason  string
}

// ErrMissingEvents is returned when an input event's prev or auth events
// are unknown: the caller (federation) fetches them and tries again.
// The error is a *MissingEventsError naming them.
var ErrMissingEvents = errors.New("roomserver: prev or auth events are missing")

// MissingEventsError names what an input event lacks. Prev events that
// are known only as outliers count as missing: the state after them is
// unknown. An empty error means the room's DAG is unknown here (we hold
// only out-of-band memberships of it).
type MissingEventsError struct {
	EventID string
	Prev    []string
	Auth    []string
}

func (e *MissingEventsError) Error() string {
	return fmt.Sprintf("roomserver: %s lacks prev events %v and auth events %v", e.EventID, e.Prev, e.Auth)
}

// Is makes errors.Is(err, ErrMissingEvents) match.
func (e *MissingEventsError) Is(target error) bool { return target == ErrMissingEvents }

// Input runs events built elsewhere (received over federation, with their
// signatures and hashes already verified) through the spec's checks in
// order: auth against their auth events, auth against the state before
// them, soft-fail against the current state. Events of one room are
// processed in the order given, serialized with every other write to the
// room.
func (rs *Roomserver) Input(ctx context.Context, roomID string, events []gomatrixserverlib.PDU) ([]InputResult, error) {
	req := &request{inputs: events, run: (*actor).processInput}
	if _, err := rs.submit(ctx, roomID, req); err != nil {
		return nil, err
	}
	return req.results, nil
}

// processInput handles one input request in its own transaction.
func (a *actor) processInput(req *request) {
	if len(a.room.extremities) == 0 {
		// A room we only hold out-of-band memberships of: its DAG is
		// unknown here, so nothing can attach to it.
		req.respond(nil, &MissingEventsError{})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	var results []InputResult
	for _, pdu := range req.inputs {
		res, err := a.inputOne(ctx, pdu, nil)
		if err != nil {
			a.room = nil // the database is the truth; reload next time
			req.respond(nil, err)
			return
		}
		results = append(results, res)
	}
	req.results = results
	req.respond(nil, nil)
}

// inputOne checks and stores one event. stateIDs, when not nil, is the
// state before the event as another server told it (the event's prev
// events are unknown here); otherwise it is computed from the prev events.
// parsed may hold those state events already parsed.
func (a *actor) inputOne(ctx context.Context, pdu gomatrixserverlib.PDU, stateIDs []string, parsed ...gomatrixserverlib.PDU) (InputResult, error) {
	room := a.room
	res := InputResult{EventID: pdu.EventID()}
	if pdu.RoomID().String() != room.id {
		return res, mxerr.InvalidParam("event belongs to another room")
	}
	outlierNID := int64(0)
	if row, err := a.rs.db.EventByID(ctx, pdu.EventID()); err == nil {
		if row.Status != storage.EventOutlier || row.RoomNID != room.nid {
			res.Status = InputDuplicate
			return res, nil
		}
		// Known only as an outlier (say, from a join's auth chain): now
		// it gets its place in the DAG.
		outlierNID = row.NID
	} else if !errors.Is(err, storage.ErrNotFound) {
		return res, err
	}
	loader := &dbLoader{rs: a.rs, room: room}
	if len(parsed) > 0 {
		loader.parsed = make(map[string]gomatrixserverlib.PDU, len(parsed))
		for _, p := range parsed {
			loader.parsed[p.EventID()] = p
		}
	}

	// 1. The event must pass the auth rules against its own auth events,
	// none of which may be rejected.
	authIDs := pdu.AuthEventIDs()
	authEvents, err := loader.load(ctx, authIDs)
	if err != nil {
		return res, err
	}
	if len(authEvents) != len(dedupe(authIDs)) {
		return res, &MissingEventsError{EventID: pdu.EventID(), Auth: missingOf(authIDs, authEvents)}
	}
	authView := &stateView{base: map[tuple]*Event{}}
	reason := ""
	for _, e := range authEvents {
		if e.Status == storage.EventRejected {
			reason = "auth event " + e.EventID() + " was rejected"
		}
		if e.IsState() {
			authView.base[e.Tuple()] = e
		}
	}
	if reason == "" {
		if err := gomatrixserverlib.Allowed(pdu, authProvider{authView}, userIDForSender); err != nil {
			reason = "not allowed by its auth events: " + err.Error()
		}
	}

	// 2. It must pass against the state before it: the state after its
	// prev events, resolved when they fork.
	var before map[tuple]*Event
	if reason == "" && stateIDs != nil {
		evs, err := loader.load(ctx, stateIDs)
		if err != nil {
			return res, err
		}
		if len(evs) != len(dedupe(stateIDs)) {
			return res, &MissingEventsError{EventID: pdu.EventID(), Auth: missingOf(stateIDs, evs)}
		}
		before = make(map[tuple]*Event, len(evs))
		for _, e := range evs {
			if e.IsState() && e.Status != storage.EventRejected {
				before[e.Tuple()] = e
			}
		}
		if err := gomatrixserverlib.Allowed(pdu, authProvider{&stateView{base: before}}, userIDForSender); err != nil {
			reason = "not allowed by the state before it: " + err.Error()
		}
	} else if reason == "" {
		prevs, err := loader.load(ctx, pdu.PrevEventIDs())
		if err != nil {
			return res, err
		}
		var usable []*Event
		for _, p := range prevs {
			if p.Status != storage.EventOutlier {
				usable = append(usable, p)
			}
		}
		if len(usable) != len(dedupe(pdu.PrevEventIDs())) {
			return res, &MissingEventsError{EventID: pdu.EventID(), Prev: missingOf(pdu.PrevEventIDs(), usable)}
		}
		if before, err = a.stateAfterAll(ctx, prevs, loader); err != nil {
			return res, err
		}
		if err := gomatrixserverlib.Allowed(pdu, authProvider{&stateView{base: before}}, userIDForSender); err != nil {
			reason = "not allowed by the state before it: " + err.Error()
		}
	}
	e := &Event{PDU: pdu, RoomNID: room.nid, NID: outlierNID}
	e.RelatesTo, e.RelType = relation(pdu.Content())
	if reason != "" {
		res.Status, res.Reason = InputRejected, reason
		return res, a.storeUnused(ctx, e, storage.EventRejected, reason, before)
	}
	// 3. Soft failure: fine in its own history, but not against where the
	// room is now (say, its sender was banned meanwhile).
	// A room whose DAG starts here (a join) has no current state yet.
	if len(room.extremities) == 0 {
		return res, a.storeAccepted(ctx, e, before, loader)
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{room.view}, userIDForSender); err != nil {
		res.Status, res.Reason = InputSoftFailed, err.Error()
		return res, a.storeUnused(ctx, e, storage.EventSoftFailed, err.Error(), before)
	}
	return res, a.storeAccepted(ctx, e, before, loader)
}

// stateAfterAll is the state after a set of events: each one's state
// after, resolved together when there is more than one.
func (a *actor) stateAfterAll(ctx context.Context, prevs []*Event, loader *dbLoader) (map[tuple]*Event, error) {
	var sets [][]gomatrixserverlib.PDU
	var single map[tuple]*Event
	// Forks of messages alone (the common case: concurrent senders on
	// several servers) share one state snapshot; no need to resolve.
	snaps := map[int64]bool{}
	for _, p := range prevs {
		snaps[stateAfterNID(p)] = true
	}
	if len(snaps) == 1 {
		prevs = prevs[:1]
	}
	for _, p := range prevs {
		m, err := a.stateAfter(ctx, p)
		if err != nil {
			return nil, err
		}
		single = m
		set := make([]gomatrixserverlib.PDU, 0, len(m))
		for _, e := range m {
			set = append(set, e.PDU)
		}
		sets = append(sets, set)
	}
	if len(sets) == 1 {
		return single, nil
	}
	resolved, err := stateres.Resolve(ctx, a.room.version, sets, loader)
	if err != nil {
		return nil, fmt.Errorf("resolving state: %w", err)
	}
	ids := make([]string, 0, len(resolved))
	for _, p := range resolved {
		ids = append(ids, p.EventID())
	}
	evs, err := loader.load(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[tuple]*Event, len(evs))
	for _, e := range evs {
		out[e.Tuple()] = e
	}
	return out, nil
}

// stateAfterNID is the snapshot of the state after an event.
func stateAfterNID(e *Event) int64 {
	if e.Status == storage.EventRejected {
		return e.StateBeforeNID // rejected events change no state
	}
	return e.StateAfterNID
}

// stateAfter loads the full state after an event. The state after the
// current tip is the room's current state, kept in memory: a remote
// message that extends it costs no state load, whatever the room's size.
// Callers must not modify the map.
func (a *actor) stateAfter(ctx context.Context, e *Event) (map[tuple]*Event, error) {
	if nid := stateAfterNID(e); nid != 0 && nid == a.room.snapshotNID {
		return a.room.view.base, nil
	}
	return a.snapshotState(ctx, stateAfterNID(e))
}

// storeUnused records a rejected or soft-failed event: in the DAG for the
// record, outside the stream and the state.
//
// before is the state before the event when it is known (the event got
// past the check against its prev events' state): later events that
// follow this one build on that state, not on ours.
func (a *actor) storeUnused(ctx context.Context, e *Event, status int, reason string, before map[tuple]*Event) error {
	return a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		snap := a.room.snapshotNID
		if before != nil {
			var err error
			if snap, err = a.snapshotFor(ctx, tx, before); err != nil {
				return err
			}
		}
		row := storage.EventRow{
			RoomNID: a.room.nid, EventID: e.EventID(), Type: e.Type(), StateKey: e.StateKey(), Sender: string(e.SenderID()),
			Depth: e.Depth(), OriginServerTS: int64(e.OriginServerTS()), Status: status, RejectionReason: reason,
			StateBeforeNID: snap, StateAfterNID: snap, RelatesTo: e.RelatesTo, RelType: e.RelType, JSON: e.JSON(),
		}
		nid, err := a.insertOrPromote(ctx, tx, e, &row)
		if err != nil {
			return err
		}
		if status == storage.EventSoftFailed && e.IsState() && before != nil {
			// A soft-failed state event still takes part in the state of
			// events that follow it (spec: "Soft failure").
			size := len(before)
			if before[e.Tuple()] == nil {
				size++
			}
			chain, _, err := tx.SnapshotInfo(ctx, snap)
			if err != nil {
				return err
			}
			after, err := tx.InsertSnapshot(ctx, a.room.nid, snap, chain+1, size,
				[]storage.StateEntry{{Type: e.Type(), StateKey: *e.StateKey(), EventNID: nid}})
			if err != nil {
				return err
			}
			if err := tx.SetStateAfter(ctx, nid, after); err != nil {
				return err
			}
		}
		return tx.InsertEdges(ctx, nid, e.PrevEventIDs())
	})
}

// insertOrPromote stores a new event row, or gives an outlier row its
// place in the DAG.
func (a *actor) insertOrPromote(ctx context.Context, tx *storage.Tx, e *Event, row *storage.EventRow) (int64, error) {
	if e.NID != 0 {
		row.NID = e.NID
		return e.NID, tx.PromoteOutlier(ctx, row)
	}
	return tx.InsertEvent(ctx, row)
}

// missingOf lists the IDs that have no loaded event.
func missingOf(ids []string, have []*Event) []string {
	got := make(map[string]bool, len(have))
	for _, e := range have {
		got[e.EventID()] = true
	}
	var out []string
	for id := range dedupe(ids) {
		if !got[id] {
			out = append(out, id)
		}
	}
	return out
}

// storeAccepted persists an accepted event with the state before it, moves
// the forward extremities and recomputes the current state over them.
func (a *actor) storeAccepted(ctx context.Context, e *Event, before map[tuple]*Event, loader *dbLoader) error {
	room := a.room
	// The new extremities: the old ones this event does not follow, plus it.
	prevSet := map[string]bool{}
	for _, p := range e.PrevEventIDs() {
		prevSet[p] = true
	}
	var ext []*Event
	for _, x := range room.extremities {
		if !prevSet[x.EventID()] {
			ext = append(ext, x)
		}
	}
	ext = append(ext, e)
	after := before
	if e.IsState() {
		after = make(map[tuple]*Event, len(before)+1)
		for k, v := range before {
			after[k] = v
		}
		if old := before[e.Tuple()]; old != nil {
			e.ReplacesNID = old.NID
		}
		after[e.Tuple()] = e
	}
	// The current state: the state after the event when it extends the only
	// tip; otherwise a resolution over every tip.
	current := after
	forked := false
	for _, x := range ext[:len(ext)-1] {
		// A tip whose state is the current one changes nothing when the
		// event's own state after is the current one too.
		if stateAfterNID(x) != room.snapshotNID || !sameState(after, room.view.base) {
			forked = true
		}
	}
	// incremental: the event builds on the current state on the only tip,
	// so the current state changes by the event alone (if at all).
	incremental := !forked && sameState(before, room.view.base)
	if forked {
		sets := [][]gomatrixserverlib.PDU{pdusOf(after)}
		for _, x := range ext[:len(ext)-1] {
			m, err := a.stateAfter(ctx, x)
			if err != nil {
				return err
			}
			sets = append(sets, pdusOf(m))
		}
		resolved, err := stateres.Resolve(ctx, room.version, sets, loader.with(e))
		if err != nil {
			return fmt.Errorf("resolving current state: %w", err)
		}
		current = map[tuple]*Event{}
		for _, p := range resolved {
			ev := after[tuple{EventType: p.Type(), StateKey: *p.StateKey()}]
			if ev == nil || ev.EventID() != p.EventID() {
				if ev = loader.known(p.EventID()); ev == nil {
					evs, err := loader.load(ctx, []string{p.EventID()})
					if err != nil || len(evs) == 0 {
						return fmt.Errorf("resolved state names an unknown event %s", p.EventID())
					}
					ev = evs[0]
				}
			}
			current[ev.Tuple()] = ev
		}
	}

	pos := a.rs.stream.Reserve(1)
	var wake []string
	redacted := ""
	err := a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		beforeNID, err := a.snapshotFor(ctx, tx, before)
		if err != nil {
			return err
		}
		afterNID := beforeNID
		e.StreamPos = pos
		row := storage.EventRow{
			RoomNID: room.nid, EventID: e.EventID(), Type: e.Type(), StateKey: e.StateKey(), Sender: string(e.SenderID()),
			Depth: e.Depth(), OriginServerTS: int64(e.OriginServerTS()), StreamPos: pos, Status: storage.EventAccepted,
			StateBeforeNID: beforeNID, StateAfterNID: beforeNID, ReplacesNID: e.ReplacesNID,
			RelatesTo: e.RelatesTo, RelType: e.RelType, JSON: e.JSON(),
		}
		nid, err := a.insertOrPromote(ctx, tx, e, &row)
		if err != nil {
			return err
		}
		e.NID = nid
		if err := tx.InsertEdges(ctx, nid, e.PrevEventIDs()); err != nil {
			return err
		}
		if e.IsState() {
			size := len(before)
			if e.ReplacesNID == 0 {
				size++
			}
			chain, _, err := tx.SnapshotInfo(ctx, beforeNID)
			if err != nil {
				return err
			}
			afterNID, err = tx.InsertSnapshot(ctx, room.nid, beforeNID, chain+1, size,
				[]storage.StateEntry{{Type: e.Type(), StateKey: *e.StateKey(), EventNID: nid}})
			if err != nil {
				return err
			}
			if err := tx.SetStateAfter(ctx, nid, afterNID); err != nil {
				return err
			}
		}
		e.StateBeforeNID, e.StateAfterNID = beforeNID, afterNID
		currentNID := afterNID
		if len(ext) > 1 {
			if currentNID, err = a.snapshotFor(ctx, tx, current); err != nil {
				return err
			}
		}
		var changes []storage.CurrentStateChange
		switch {
		case !incremental:
			changes = stateChanges(room.view.base, current)
		case e.IsState():
			// On the only tip, a state event changes just its own key.
			changes = []storage.CurrentStateChange{{Type: e.Type(), StateKey: *e.StateKey(), EventNID: e.NID, Membership: membershipOf(e)}}
		}
		if err := tx.UpdateCurrentState(ctx, room.nid, changes); err != nil {
			return err
		}
		extNIDs := make([]int64, 0, len(ext))
		for _, x := range ext {
			extNIDs = append(extNIDs, x.NID)
		}
		if err := tx.SetForwardExtremities(ctx, room.nid, extNIDs); err != nil {
			return err
		}
		if err := tx.SetRoomState(ctx, room.nid, currentNID); err != nil {
			return err
		}
		if e.Type() == spec.MRoomRedaction && redactsOf(e) != "" && a.redactionApplies(ctx, e, &stateView{base: current}) {
			if err := tx.SetRedactedBy(ctx, redactsOf(e), e.EventID()); err != nil {
				return err
			}
			redacted = redactsOf(e)
		}
		room.snapshotNID = currentNID
		return nil
	})
	if err != nil {
		a.rs.stream.Release(pos, 1, nil)
		return err
	}
	// Fold the new state and tips into memory, then wake the members. A
	// message on the only tip changes no state: nothing to fold, which
	// keeps its cost independent of the room's size.
	switch {
	case !incremental:
		for k := range room.view.base {
			if current[k] == nil {
				delete(room.view.base, k)
			}
		}
		for k, v := range current {
			room.view.base[k] = v
		}
		room.joined = map[string]bool{}
		for k, v := range current {
			if k.EventType == spec.MRoomMember && membershipOf(v) == spec.Join {
				room.joined[k.StateKey] = true
			}
		}
	case e.IsState():
		room.view.base[e.Tuple()] = e
		if m := membershipOf(e); m == spec.Join {
			room.joined[*e.StateKey()] = true
		} else if m != "" {
			delete(room.joined, *e.StateKey())
		}
	}
	room.extremities = ext
	if redacted != "" {
		a.rs.cache.evict(redacted)
		a.applyRedactionToState(redacted)
	}
	if chain, size, err := a.rs.db.SnapshotInfo(ctx, room.snapshotNID); err == nil {
		room.chainLength, room.size = chain, size
	}
	for u := range room.joined {
		wake = append(wake, u)
	}
	if m := membershipOf(e); m != "" && !room.joined[*e.StateKey()] {
		wake = append(wake, *e.StateKey())
	}
	a.rs.stream.Release(pos, 1, wake)
	return nil
}

// snapshotFor stores a full state as a snapshot, reusing the current one
// when the state is the same.
func (a *actor) snapshotFor(ctx context.Context, tx *storage.Tx, state map[tuple]*Event) (int64, error) {
	if sameState(a.room.view.base, state) && a.room.snapshotNID != 0 {
		return a.room.snapshotNID, nil
	}
	entries := make([]storage.StateEntry, 0, len(state))
	for k, e := range state {
		entries = append(entries, storage.StateEntry{Type: k.EventType, StateKey: k.StateKey, EventNID: e.NID})
	}
	return tx.InsertSnapshot(ctx, a.room.nid, 0, 1, len(entries), entries)
}

func sameState(a, b map[tuple]*Event) bool {
	if len(a) != len(b) {
		return false
	}
	if reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() {
		return true // the very same map: no need to compare entries
	}
	for k, e := range a {
		if o := b[k]; o == nil || o.EventID() != e.EventID() {
			return false
		}
	}
	return true
}

// stateChanges lists what turns state old into state new.
func stateChanges(old, new map[tuple]*Event) []storage.CurrentStateChange {
	var out []storage.CurrentStateChange
	for k, e := range new {
		if o := old[k]; o == nil || o.EventID() != e.EventID() {
			out = append(out, storage.CurrentStateChange{Type: k.EventType, StateKey: k.StateKey, EventNID: e.NID, Membership: membershipOf(e)})
		}
	}
	for k := range old {
		if new[k] == nil {
			out = append(out, storage.CurrentStateChange{Type: k.EventType, StateKey: k.StateKey})
		}
	}
	return out
}

func pdusOf(m map[tuple]*Event) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(m))
	for _, e := range m {
		out = append(out, e.PDU)
	}
	return out
}

func dedupe(ids []string) map[string]bool {
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out
}

// dbLoader reads a room's events by ID for the checks and for state
// resolution, remembering what it read.
type dbLoader struct {
	rs    *Roomserver
	room  *roomState
	cache map[string]*Event
	// parsed are events the caller holds parsed and verified, used
	// instead of parsing their stored JSON again.
	parsed map[string]gomatrixserverlib.PDU
}

func (l *dbLoader) known(id string) *Event { return l.cache[id] }

// with adds an event not stored yet (the one being input).
func (l *dbLoader) with(e *Event) *dbLoader {
	if l.cache == nil {
		l.cache = map[string]*Event{}
	}
	l.cache[e.EventID()] = e
	return l
}

func (l *dbLoader) load(ctx context.Context, ids []string) ([]*Event, error) {
	if l.cache == nil {
		l.cache = map[string]*Event{}
	}
	var missing []string
	for id := range dedupe(ids) {
		if l.cache[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		rows, err := l.rs.db.EventsByID(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if r.RoomNID != l.room.nid {
				continue // an event of another room is no help here
			}
			if p := l.parsed[r.EventID]; p != nil && r.RedactedBy == "" {
				// Parsed already by the caller (a join's thousands of
				// state events): the row adds only what we know of it.
				l.cache[r.EventID] = &Event{
					PDU: p, NID: r.NID, RoomNID: r.RoomNID, StreamPos: r.StreamPos,
					StateBeforeNID: r.StateBeforeNID, StateAfterNID: r.StateAfterNID, Status: r.Status,
					ReplacesNID: r.ReplacesNID, RelatesTo: r.RelatesTo, RelType: r.RelType,
				}
				continue
			}
			e, err := eventFromRow(r, l.room.version.Version())
			if err != nil {
				return nil, err
			}
			l.cache[e.EventID()] = e
		}
	}
	out := make([]*Event, 0, len(ids))
	for id := range dedupe(ids) {
		if e := l.cache[id]; e != nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Events implements stateres.EventLoader.
func (l *dbLoader) Events(ctx context.Context, ids []string) (map[string]gomatrixserverlib.PDU, error) {
	evs, err := l.load(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]gomatrixserverlib.PDU, len(evs))
	for _, e := range evs {
		out[e.EventID()] = e.PDU
	}
	return out, nil
}

// IsRejected implements stateres.EventLoader.
func (l *dbLoader) IsRejected(id string) bool {
	e := l.cache[id]
	return e != nil && e.Status == storage.EventRejected
}
