package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver/stateres"
	"github.com/veche/veche/storage"
)

// Backfill: history from before this server joined a room (or from a gap
// in what it received), fetched from other servers when clients page back
// through /messages. Backfilled events are history, not news:
//
//   - they take stream positions below every other event (negative ones,
//     handed out downwards from the lowest stored position), so sync,
//     which reads forwards from a positive position, never returns them,
//     while /messages, which orders by (depth, stream position), shows
//     them in their place;
//   - they change neither the forward extremities nor the current state,
//     and wake no one;
//   - each is checked like any remote event (auth events, then the state
//     before it), with that state computed from its prev events when this
//     server holds them, else taken from the caller (the state another
//     server reported, see NeedStateError). Soft failure does not apply:
//     it is about the present, and these events are past. (Outliers that
//     fail only against that state are kept as soft-failed: they passed
//     their auth events and may be in use.)

// NeedStateError names backfilled events whose prev events have no place
// in the DAG here and for which InputBackfill was given no state: the
// caller fetches the state before each (state_ids from the server they
// came from, the events stored as outliers) and tries again.
type NeedStateError struct {
	EventIDs []string
}

func (e *NeedStateError) Error() string {
	return fmt.Sprintf("roomserver: the state before backfilled events %v is unknown", e.EventIDs)
}

// InputBackfill stores history events of a room this server is in (their
// signatures and hashes verified by the caller), in any order. states
// gives, for events whose prev events are unknown here, the state before
// them as event IDs, every one of them stored (outliers are fine). Events
// known only as outliers get their place in the DAG. Auth events missing
// from both the batch and the database give a *MissingEventsError naming
// them; prev events missing without a given state give a *NeedStateError.
// Either way nothing is stored.
func (rs *Roomserver) InputBackfill(ctx context.Context, roomID string, events []gomatrixserverlib.PDU, states map[string][]string) ([]InputResult, error) {
	req := &request{inputs: events, run: func(a *actor, r *request) {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		defer cancel()
		results, err := a.inputBackfill(ctx, r.inputs, states)
		if err != nil {
			var missing *MissingEventsError
			var need *NeedStateError
			if !errors.As(err, &missing) && !errors.As(err, &need) {
				a.room = nil // the database is the truth; reload next time
			}
			r.respond(nil, err)
			return
		}
		r.results = results
		r.respond(nil, nil)
	}}
	if _, err := rs.submit(ctx, roomID, req); err != nil {
		return nil, err
	}
	return req.results, nil
}

// reserveBackfill hands out n stream positions below every position used
// so far, lowest first. The lowest stored position is read once; after
// that the counter lives here (only backfill goes below zero).
func (rs *Roomserver) reserveBackfill(ctx context.Context, n int) (int64, error) {
	rs.backfillMu.Lock()
	defer rs.backfillMu.Unlock()
	if !rs.backfillLoaded {
		low, err := rs.db.MinStreamPos(ctx)
		if err != nil {
			return 0, err
		}
		rs.backfillLow, rs.backfillLoaded = low, true
	}
	rs.backfillLow -= int64(n)
	return rs.backfillLow, nil
}

// backfillState is a state known during a backfill batch, with the
// snapshot that stores it (0: not stored yet).
type backfillState struct {
	state map[tuple]*Event
	snap  int64
}

type backfillRun struct {
	a      *actor
	tx     *storage.Tx
	loader *dbLoader
	// after is the state after each event of the batch stored so far.
	after map[string]*backfillState
	// bySnapshot caches the states of stored events' snapshots.
	bySnapshot map[int64]map[tuple]*Event
	// redactions maps stored events of the batch to accepted redactions
	// of them that arrived earlier (later in the DAG).
	redactions map[string]*Event
	pos        int64
	redacted   []string
}

func (a *actor) inputBackfill(ctx context.Context, events []gomatrixserverlib.PDU, states map[string][]string) ([]InputResult, error) {
	room := a.room
	if len(room.extremities) == 0 {
		return nil, mxerr.Forbidden("This server is not in room " + room.id)
	}
	byID, loader, known, err := a.loadBatch(ctx, events)
	if err != nil {
		return nil, err
	}
	var results []InputResult
	outliers := map[string]int64{}
	for _, e := range known {
		if e.Status == storage.EventOutlier {
			outliers[e.EventID()] = e.NID
			continue
		}
		results = append(results, InputResult{EventID: e.EventID(), Status: InputDuplicate})
		delete(byID, e.EventID())
	}
	order, err := dagOrder(byID)
	if err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return results, nil
	}

	// Everything the batch needs from outside it must be stored: auth
	// events and given states (any status), prev events (in the DAG).
	var outside, prevs []string
	for _, e := range order {
		for _, id := range e.AuthEventIDs() {
			if byID[id] == nil {
				outside = append(outside, id)
			}
		}
		outside = append(outside, states[e.EventID()]...)
		for _, id := range e.PrevEventIDs() {
			if byID[id] == nil {
				prevs = append(prevs, id)
			}
		}
	}
	// The loader's cache holds the batch's outliers in their old form;
	// they are checked from the batch's copies instead.
	for id := range outliers {
		delete(loader.cache, id)
	}
	if _, err := loader.load(ctx, append(append([]string{}, outside...), prevs...)); err != nil {
		return nil, err
	}
	var missing []string
	for id := range dedupe(outside) {
		if byID[id] == nil && loader.known(id) == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, &MissingEventsError{Auth: missing}
	}
	var need []string
	for _, e := range order {
		if states[e.EventID()] != nil {
			continue
		}
		for _, id := range e.PrevEventIDs() {
			if byID[id] != nil {
				continue
			}
			if p := loader.known(id); p == nil || p.Status == storage.EventOutlier {
				need = append(need, e.EventID())
				break
			}
		}
	}
	if len(need) > 0 {
		return nil, &NeedStateError{EventIDs: need}
	}

	redactions, err := a.redactionsOf(ctx, order)
	if err != nil {
		return nil, err
	}
	low, err := a.rs.reserveBackfill(ctx, len(order))
	if err != nil {
		return nil, err
	}
	run := &backfillRun{
		a: a, loader: loader, after: map[string]*backfillState{}, bySnapshot: map[int64]map[tuple]*Event{},
		redactions: redactions, pos: low,
	}
	var stored []*Event
	err = a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		run.tx = tx
		stored, run.redacted = nil, nil
		for _, pdu := range order {
			e := &Event{PDU: pdu, RoomNID: room.nid, NID: outliers[pdu.EventID()]}
			e.RelatesTo, e.RelType = relation(pdu.Content())
			res, err := run.store(ctx, e, states[pdu.EventID()])
			if err != nil {
				return fmt.Errorf("backfilling %s: %w", pdu.EventID(), err)
			}
			results = append(results, res)
			stored = append(stored, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, e := range stored {
		a.rs.cache.evict(e.EventID())
	}
	for _, id := range run.redacted {
		a.rs.cache.evict(id)
	}
	if len(stored) > 0 {
		// Promoted outliers and redacted events may be in the in-memory
		// current state in their old form; reload it next time.
		a.room = nil
	}
	return results, nil
}

// store checks one event and writes it.
func (r *backfillRun) store(ctx context.Context, e *Event, stateIDs []string) (InputResult, error) {
	room := r.a.room
	res := InputResult{EventID: e.EventID()}

	// 1. The auth rules against its own auth events.
	reason := ""
	authView := &stateView{base: map[tuple]*Event{}}
	for _, id := range e.AuthEventIDs() {
		ae := r.loader.known(id)
		if ae == nil {
			reason = "auth event " + id + " is unknown"
			break
		}
		if ae.Status == storage.EventRejected {
			reason = "auth event " + id + " was rejected"
			break
		}
		if ae.IsState() {
			authView.base[ae.Tuple()] = ae
		}
	}
	if reason == "" {
		if err := gomatrixserverlib.Allowed(e.PDU, authProvider{authView}, userIDForSender); err != nil {
			reason = "not allowed by its auth events: " + err.Error()
		}
	}

	// 2. The auth rules against the state before it.
	before, err := r.stateBefore(ctx, e, stateIDs)
	if err != nil {
		return res, err
	}
	// An outlier passed its auth events when it was stored, and may be
	// in use (current state, auth of other events): failing only against
	// the state computed here, it is kept out of the history, not
	// rejected after the fact.
	status := storage.EventRejected
	if reason == "" {
		if err := gomatrixserverlib.Allowed(e.PDU, authProvider{&stateView{base: before.state}}, userIDForSender); err != nil {
			reason = "not allowed by the state before it: " + err.Error()
			if e.NID != 0 {
				status = storage.EventSoftFailed
			}
		}
	}
	if before.snap == 0 && len(before.state) > 0 {
		if before.snap, err = r.fullSnapshot(ctx, before.state); err != nil {
			return res, err
		}
	}
	row := storage.EventRow{
		RoomNID: room.nid, EventID: e.EventID(), Type: e.Type(), StateKey: e.StateKey(), Sender: string(e.SenderID()),
		Depth: e.Depth(), OriginServerTS: int64(e.OriginServerTS()), StateBeforeNID: before.snap, StateAfterNID: before.snap,
		RelatesTo: e.RelatesTo, RelType: e.RelType, JSON: e.JSON(),
	}
	after := before
	if reason != "" {
		res.Status, res.Reason = InputRejected, reason
		if status == storage.EventSoftFailed {
			res.Status = InputSoftFailed
		}
		row.Status, row.RejectionReason = status, reason
	} else {
		row.Status, row.StreamPos = storage.EventAccepted, r.pos
		r.pos++
		if e.IsState() {
			if old := before.state[e.Tuple()]; old != nil {
				row.ReplacesNID = old.NID
			}
		}
	}
	nid, err := r.a.insertOrPromote(ctx, r.tx, e, &row)
	if err != nil {
		return res, err
	}
	e.NID, e.Status, e.StreamPos, e.ReplacesNID = nid, row.Status, row.StreamPos, row.ReplacesNID
	e.StateBeforeNID, e.StateAfterNID = before.snap, before.snap
	if err := r.tx.InsertEdges(ctx, nid, e.PrevEventIDs()); err != nil {
		return res, err
	}
	if reason == "" && e.IsState() {
		if after, err = r.stateAfter(ctx, e, before); err != nil {
			return res, err
		}
		e.StateAfterNID = after.snap
		if err := r.tx.SetStateAfter(ctx, nid, after.snap); err != nil {
			return res, err
		}
	}
	r.loader.with(e)
	r.after[e.EventID()] = after
	if reason != "" {
		return res, nil
	}
	if target := redactsOf(e); target != "" && r.redactionApplies(ctx, e, before.state) {
		if err := r.tx.SetRedactedBy(ctx, target, e.EventID()); err != nil {
			return res, err
		}
		r.redacted = append(r.redacted, target)
	}
	if red := r.redactions[e.EventID()]; red != nil && r.redactionApplies(ctx, red, nil) {
		if err := r.tx.SetRedactedBy(ctx, e.EventID(), red.EventID()); err != nil {
			return res, err
		}
	}
	return res, nil
}

// stateBefore is the state before e: as given, or after its prev events.
func (r *backfillRun) stateBefore(ctx context.Context, e *Event, stateIDs []string) (*backfillState, error) {
	if stateIDs != nil {
		evs, err := r.loader.load(ctx, stateIDs)
		if err != nil {
			return nil, err
		}
		out := &backfillState{state: make(map[tuple]*Event, len(evs))}
		for _, s := range evs {
			if s.IsState() && s.Status != storage.EventRejected {
				out.state[s.Tuple()] = s
			}
		}
		return out, nil
	}
	prevs := e.PrevEventIDs()
	if len(prevs) == 0 {
		return &backfillState{state: map[tuple]*Event{}}, nil
	}
	sets := make([]*backfillState, 0, len(prevs))
	for id := range dedupe(prevs) {
		s, err := r.stateAfterPrev(ctx, id)
		if err != nil {
			return nil, err
		}
		sets = append(sets, s)
	}
	same := true
	for _, s := range sets[1:] {
		same = same && s.snap != 0 && s.snap == sets[0].snap
	}
	if len(sets) == 1 || same {
		return sets[0], nil
	}
	pdus := make([][]gomatrixserverlib.PDU, 0, len(sets))
	for _, s := range sets {
		pdus = append(pdus, pdusOf(s.state))
	}
	resolved, err := stateres.Resolve(ctx, r.a.room.version, pdus, r.loader)
	if err != nil {
		return nil, fmt.Errorf("resolving state: %w", err)
	}
	ids := make([]string, 0, len(resolved))
	for _, p := range resolved {
		ids = append(ids, p.EventID())
	}
	evs, err := r.loader.load(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := &backfillState{state: make(map[tuple]*Event, len(evs))}
	for _, s := range evs {
		out.state[s.Tuple()] = s
	}
	return out, nil
}

// stateAfterPrev is the state after a prev event: one of the batch, or a
// stored one (InputBackfill checked it is in the DAG).
func (r *backfillRun) stateAfterPrev(ctx context.Context, id string) (*backfillState, error) {
	if s := r.after[id]; s != nil {
		return s, nil
	}
	p := r.loader.known(id)
	if p == nil || p.Status == storage.EventOutlier {
		return nil, fmt.Errorf("prev event %s is not in the DAG", id)
	}
	snap := p.StateAfterNID
	if p.Status != storage.EventAccepted {
		snap = p.StateBeforeNID // unused events change no state
	}
	if st := r.bySnapshot[snap]; st != nil {
		return &backfillState{state: st, snap: snap}, nil
	}
	st, err := r.a.snapshotState(ctx, snap)
	if err != nil {
		return nil, err
	}
	r.bySnapshot[snap] = st
	return &backfillState{state: st, snap: snap}, nil
}

// stateAfter stores the state after accepted state event e: a delta on
// the state before it, or a full copy when the chain grows long.
func (r *backfillRun) stateAfter(ctx context.Context, e *Event, before *backfillState) (*backfillState, error) {
	state := make(map[tuple]*Event, len(before.state)+1)
	for k, v := range before.state {
		state[k] = v
	}
	state[e.Tuple()] = e
	out := &backfillState{state: state}
	if before.snap == 0 {
		snap, err := r.fullSnapshot(ctx, state)
		out.snap = snap
		return out, err
	}
	chain, _, err := r.tx.SnapshotInfo(ctx, before.snap)
	if err != nil {
		return nil, err
	}
	if chain+1 > chainCap(len(state)) {
		snap, err := r.fullSnapshot(ctx, state)
		out.snap = snap
		return out, err
	}
	out.snap, err = r.tx.InsertSnapshot(ctx, r.a.room.nid, before.snap, chain+1, len(state),
		[]storage.StateEntry{{Type: e.Type(), StateKey: *e.StateKey(), EventNID: e.NID}})
	return out, err
}

func (r *backfillRun) fullSnapshot(ctx context.Context, state map[tuple]*Event) (int64, error) {
	entries := make([]storage.StateEntry, 0, len(state))
	for k, e := range state {
		entries = append(entries, storage.StateEntry{Type: k.EventType, StateKey: k.StateKey, EventNID: e.NID})
	}
	return r.tx.InsertSnapshot(ctx, r.a.room.nid, 0, 1, len(entries), entries)
}

// redactionApplies decides whether an accepted redaction takes effect on
// its target, which must be stored (in the batch or before it): the
// redacting user sent the target, or has the redact level in the state
// before the redaction (given, or read from the redaction's snapshot).
func (r *backfillRun) redactionApplies(ctx context.Context, redaction *Event, before map[tuple]*Event) bool {
	target := r.loader.known(redactsOf(redaction))
	if target == nil {
		evs, err := r.loader.load(ctx, []string{redactsOf(redaction)})
		if err != nil || len(evs) == 0 {
			return false
		}
		target = evs[0]
	}
	if target.RoomNID != r.a.room.nid || target.Type() == spec.MRoomCreate {
		return false
	}
	if target.SenderID() == redaction.SenderID() {
		return true
	}
	if before == nil {
		st, err := r.a.snapshotState(ctx, redaction.StateBeforeNID)
		if err != nil {
			return false
		}
		before = st
	}
	view := &stateView{base: before}
	return powerLevel(view, string(redaction.SenderID())) >= redactLevel(view)
}

// snapshotState loads the full state of a stored snapshot.
func (a *actor) snapshotState(ctx context.Context, snap int64) (map[tuple]*Event, error) {
	entries, err := a.rs.db.Snapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(entries))
	for _, n := range entries {
		nids = append(nids, n)
	}
	evs, err := a.rs.eventsByNID(ctx, nids, a.room.version.Version())
	if err != nil {
		return nil, err
	}
	out := make(map[tuple]*Event, len(evs))
	for _, e := range evs {
		out[e.Tuple()] = e
	}
	return out, nil
}

// redactionsOf finds accepted redactions stored earlier whose targets are
// among the events: history often arrives after what redacted it.
func (a *actor) redactionsOf(ctx context.Context, events []gomatrixserverlib.PDU) (map[string]*Event, error) {
	ids := make([]string, 0, len(events))
	for _, e := range events {
		ids = append(ids, e.EventID())
	}
	rows, err := a.rs.db.RedactionsOf(ctx, a.room.nid, ids)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	evs, err := a.rs.parseRows(rows, a.room.version.Version())
	if err != nil {
		return nil, err
	}
	out := map[string]*Event{}
	for _, e := range evs {
		if t := redactsOf(e); t != "" && out[t] == nil {
			out[t] = e
		}
	}
	return out, nil
}

// redactsOf is the target of a redaction: content.redacts from room
// version 11 on (which gomatrixserverlib's Redacts does not read), the
// top-level redacts before.
func redactsOf(e gomatrixserverlib.PDU) string {
	if e.Type() != spec.MRoomRedaction {
		return ""
	}
	if id := e.Redacts(); id != "" {
		return id
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(e.Content(), &c)
	return c.Redacts
}

// dagOrder sorts events so that each comes after its prev and auth events
// among them.
func dagOrder(byID map[string]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	return topoOrder(byID, func(e gomatrixserverlib.PDU) []string {
		return append(append([]string{}, e.PrevEventIDs()...), e.AuthEventIDs()...)
	})
}
