package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

const (
	// maxBatch bounds how many requests one transaction commits.
	maxBatch = 256
	// maxPrevEvents bounds prev_events of local events (spec guidance: a
	// handful of extremities is plenty; the rest stay extremities).
	maxPrevEvents = 10
	// idleTimeout frees the memory of rooms nobody writes to.
	idleTimeout = 10 * time.Minute
	// commitTimeout bounds a batch's transaction; no request's own context
	// may cancel a commit that other requests share.
	commitTimeout = 30 * time.Second
	// maxContentBytes leaves room for the event envelope within the spec's
	// 65536-byte limit on a whole event.
	maxContentBytes = 60 * 1024
)

// errRoomExists is returned when a created room's ID is taken.
var errRoomExists = errors.New("roomserver: room already exists")

// Build describes a local event to create.
type Build struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction.
	Redacts string
	// Txn makes the send idempotent for one device.
	Txn *Txn
	// Precheck runs against the room state just before the event is built,
	// so that callers refuse with a precise error where auth rules would
	// only say "forbidden".
	Precheck func(s StateView) error
}

// Txn is a client transaction: (user, device, transaction ID).
type Txn struct {
	Localpart, DeviceID, TxnID string
}

// StateView reads a room's state.
type StateView interface {
	Get(typ, stateKey string) *Event
	Membership(userID string) string
}

// Membership implements StateView.
func (s *stateView) Membership(userID string) string { return s.membership(userID) }

type request struct {
	ctx    context.Context
	create *createSpec
	builds []Build
	// inputs are events built elsewhere; results report each.
	inputs  []gomatrixserverlib.PDU
	results []InputResult
	// run, when set, handles the request in its own transaction instead
	// of the local build path (remote input, outliers, templates).
	run func(a *actor, r *request)
	// version lets run create the room row of a room first heard of over
	// federation; nil means the room must exist.
	version gomatrixserverlib.IRoomVersion
	done    chan response
}

type response struct {
	events []*Event
	err    error
}

func (r *request) respond(events []*Event, err error) { r.done <- response{events, err} }

// createSpec starts a new room with an already built create event.
type createSpec struct {
	version gomatrixserverlib.IRoomVersion
	event   gomatrixserverlib.PDU
}

// roomState is what an actor keeps of its room between batches.
type roomState struct {
	nid         int64
	id          string
	version     gomatrixserverlib.IRoomVersion
	view        *stateView // current state
	extremities []*Event
	snapshotNID int64
	chainLength int
	size        int
	joined      map[string]bool
}

type actor struct {
	rs      *Roomserver
	roomID  string
	queue   chan *request
	pending int // submitters about to queue; guarded by rs.mu
	room    *roomState
}

func (a *actor) run() {
	defer a.rs.wg.Done()
	idle := time.NewTimer(idleTimeout)
	defer idle.Stop()
	for {
		select {
		case req := <-a.queue:
			batch := []*request{req}
		drain:
			for len(batch) < maxBatch {
				select {
				case r := <-a.queue:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			a.process(batch)
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(idleTimeout)
		case <-idle.C:
			if a.rs.retire(a) {
				return
			}
			idle.Reset(idleTimeout)
		case <-a.rs.quit:
			for {
				select {
				case r := <-a.queue:
					r.respond(nil, errStopped)
				default:
					return
				}
			}
		}
	}
}

// batchState tracks the DAG tip while a batch is built.
type batchState struct {
	extremities []*Event
	txns        map[Txn]*Event
}

type built struct {
	req    *request
	events []*Event
	txns   []*Txn
	// redacts maps an event to the redaction applied to it.
	redacts map[string]string
}

// process runs a batch in arrival order: consecutive local builds commit
// together, and each input request (events from elsewhere, which may fork
// the DAG) commits on its own.
func (a *actor) process(batch []*request) {
	var local []*request
	flush := func() {
		if len(local) > 0 {
			a.processLocal(local)
			local = nil
		}
	}
	for _, r := range batch {
		if r.run == nil {
			local = append(local, r)
			continue
		}
		flush()
		if r.ctx.Err() != nil {
			r.respond(nil, r.ctx.Err())
			continue
		}
		if a.room == nil {
			if err := a.loadOrCreate(r.version); err != nil {
				r.respond(nil, err)
				continue
			}
		}
		r.run(a, r)
	}
	flush()
}

func (a *actor) processLocal(batch []*request) {
	if a.room == nil && batch[0].create == nil {
		if err := a.load(); err != nil {
			for _, r := range batch {
				r.respond(nil, err)
			}
			return
		}
	}
	var view *stateView
	bs := &batchState{txns: map[Txn]*Event{}}
	if a.room != nil {
		view = newOverlay(a.room.view)
		bs.extremities = a.room.extremities
	}
	var done []*built
	for i, req := range batch {
		if req.ctx.Err() != nil {
			req.respond(nil, req.ctx.Err())
			continue
		}
		if req.create != nil {
			if i != 0 || a.room != nil {
				req.respond(nil, errRoomExists)
				continue
			}
			a.room = newRoomState(a.roomID, req.create.version)
			view = newOverlay(a.room.view)
		}
		if a.room == nil {
			req.respond(nil, mxerr.NotFound("Unknown room"))
			continue
		}
		if len(req.builds) == 1 && req.builds[0].Txn != nil {
			// A retried transaction gets the event it made the first time.
			prior, err := a.priorTxn(req.ctx, *req.builds[0].Txn, bs)
			if err != nil || prior != nil {
				req.respond([]*Event{prior}, err)
				continue
			}
		}
		saved := bs.extremities
		reqView := newOverlay(view)
		b, err := a.buildRequest(req, reqView, bs)
		if err != nil {
			bs.extremities = saved
			if req.create != nil {
				a.room = nil // nothing of the room was committed
			}
			req.respond(nil, err)
			continue
		}
		reqView.fold()
		done = append(done, b)
	}
	if len(done) == 0 {
		return
	}
	n := 0
	for _, b := range done {
		n += len(b.events)
	}
	first := a.rs.stream.Reserve(n)
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	snap, err := a.persist(ctx, done, first, bs)
	if err != nil {
		a.rs.stream.Release(first, n, nil)
		a.room = nil // reload from the database next time
		if !errors.Is(err, errRoomExists) {
			a.rs.log.WithError(err).WithField("room_id", a.roomID).Error("Committing room events failed")
			err = mxerr.Internal()
		}
		for _, b := range done {
			b.req.respond(nil, err)
		}
		return
	}
	view.fold()
	a.room.extremities = bs.extremities
	a.room.snapshotNID = snap.nid
	a.room.chainLength, a.room.size = snap.chainLength, snap.size
	wake := map[string]bool{}
	for _, b := range done {
		for _, e := range b.events {
			if m := membershipOf(e); m != "" {
				wake[*e.StateKey()] = true
				if m == spec.Join {
					a.room.joined[*e.StateKey()] = true
				} else {
					delete(a.room.joined, *e.StateKey())
				}
			}
		}
		for target := range b.redacts {
			a.rs.cache.evict(target)
			a.applyRedactionToState(target)
		}
		for _, e := range b.events {
			a.rs.cache.put(e)
		}
	}
	users := make([]string, 0, len(a.room.joined)+len(wake))
	for u := range a.room.joined {
		users = append(users, u)
	}
	for u := range wake {
		if !a.room.joined[u] {
			users = append(users, u)
		}
	}
	a.rs.stream.Release(first, n, users)
	for _, b := range done {
		b.req.respond(b.events, nil)
	}
}

func newRoomState(roomID string, version gomatrixserverlib.IRoomVersion) *roomState {
	return &roomState{id: roomID, version: version, view: &stateView{base: map[tuple]*Event{}}, joined: map[string]bool{}}
}

// load reads the room's current state and extremities from the database.
func (a *actor) load() error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	db := a.rs.db
	room, err := db.RoomByID(ctx, a.roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxerr.NotFound("Unknown room " + a.roomID)
	}
	if err != nil {
		return err
	}
	verImpl, err := roomVersionImpl(room.Version)
	if err != nil {
		return err
	}
	rs := newRoomState(room.RoomID, verImpl)
	rs.nid, rs.snapshotNID = room.NID, room.StateNID
	nids, err := db.CurrentStateNIDs(ctx, room.NID)
	if err != nil {
		return err
	}
	events, err := a.rs.eventsByNID(ctx, nids, verImpl.Version())
	if err != nil {
		return err
	}
	for _, e := range events {
		rs.view.base[e.Tuple()] = e
		if membershipOf(e) == spec.Join {
			rs.joined[*e.StateKey()] = true
		}
	}
	extNIDs, err := db.ForwardExtremities(ctx, room.NID)
	if err != nil {
		return err
	}
	if rs.extremities, err = a.rs.eventsByNID(ctx, extNIDs, verImpl.Version()); err != nil {
		return err
	}
	if room.StateNID != 0 {
		if rs.chainLength, rs.size, err = db.SnapshotInfo(ctx, room.StateNID); err != nil {
			return err
		}
	}
	a.room = rs
	return nil
}

// loadOrCreate loads the room, creating its row first when version is
// set and the room is unknown: a room first heard of over federation
// starts with no state and no extremities.
func (a *actor) loadOrCreate(version gomatrixserverlib.IRoomVersion) error {
	err := a.load()
	if version == nil || !errors.Is(err, mxerr.NotFound("")) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	nid, err := a.rs.db.CreateRoom(ctx, a.roomID, string(version.Version()), a.rs.now().UnixMilli())
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		return err
	}
	if err == nil {
		a.room = newRoomState(a.roomID, version)
		a.room.nid = nid
		return nil
	}
	return a.load()
}

// buildRequest builds, signs and authorizes every event of a request in
// order, applying each to view.
func (a *actor) buildRequest(req *request, view *stateView, bs *batchState) (*built, error) {
	b := &built{req: req, redacts: map[string]string{}}
	if req.create != nil {
		e := &Event{PDU: req.create.event}
		if err := gomatrixserverlib.Allowed(e.PDU, authProvider{view}, userIDForSender); err != nil {
			return nil, mxerr.Forbidden(err.Error())
		}
		view.set(e)
		bs.extremities = []*Event{e}
		b.events = append(b.events, e)
		b.txns = append(b.txns, nil)
	}
	for _, spec := range req.builds {
		e, err := a.buildEvent(spec, view, bs)
		if err != nil {
			return nil, err
		}
		if spec.Type == "m.room.redaction" {
			if target := redactsOf(e); target != "" && a.redactionApplies(req.ctx, e, view) {
				b.redacts[target] = e.EventID()
			}
		}
		b.events = append(b.events, e)
		b.txns = append(b.txns, spec.Txn)
		if spec.Txn != nil {
			bs.txns[*spec.Txn] = e
		}
	}
	return b, nil
}

// priorTxn finds the event a transaction already produced, in this batch
// or in the database.
func (a *actor) priorTxn(ctx context.Context, t Txn, bs *batchState) (*Event, error) {
	if e := bs.txns[t]; e != nil {
		return e, nil
	}
	id, err := a.rs.db.Transaction(ctx, t.Localpart, t.DeviceID, t.TxnID)
	if err != nil || id == "" {
		return nil, err
	}
	return a.rs.Event(ctx, id)
}

// buildEvent makes one local event on top of the current DAG tip.
func (a *actor) buildEvent(b Build, view *stateView, bs *batchState) (*Event, error) {
	if b.Precheck != nil {
		if err := b.Precheck(view); err != nil {
			return nil, err
		}
	}
	if len(b.Content) > maxContentBytes {
		return nil, mxerr.TooLarge("Event content is too large")
	}
	room := a.room
	prev := make([]string, 0, len(bs.extremities))
	var depth int64
	for i, e := range bs.extremities {
		if i < maxPrevEvents {
			prev = append(prev, e.EventID())
		}
		depth = max(depth, e.Depth())
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: b.Sender, RoomID: room.id, Type: b.Type, StateKey: b.StateKey, Content: spec.RawJSON(b.Content),
		Redacts: b.Redacts, PrevEvents: prev, Depth: min(depth+1, 1<<53),
	}
	eb := room.version.NewEventBuilderFromProtoEvent(&proto)
	if err := eb.AddAuthEvents(authProvider{view}); err != nil {
		return nil, mxerr.Forbidden(err.Error())
	}
	pdu, err := eb.Build(a.rs.now(), a.rs.serverName, a.rs.key.ID, a.rs.key.PrivateKey)
	if err != nil {
		return nil, mxerr.BadJSON(fmt.Sprintf("Invalid event: %v", err))
	}
	if err := gomatrixserverlib.Allowed(pdu, authProvider{view}, userIDForSender); err != nil {
		return nil, mxerr.Forbidden(err.Error())
	}
	e := &Event{PDU: pdu, RoomNID: room.nid}
	e.RelatesTo, e.RelType = relation(pdu.Content())
	if e.IsState() {
		view.set(e)
	}
	bs.extremities = []*Event{e}
	return e, nil
}

// roomVersionBefore11 reports versions whose redactions carry the target
// only at the top level.
func roomVersionBefore11(v gomatrixserverlib.IRoomVersion) bool {
	switch v.Version() {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
		gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
		gomatrixserverlib.RoomVersionV10:
		return true
	}
	return false
}

// redactionApplies decides whether an accepted redaction takes effect on
// its target (spec, room versions 3+: the redacting user is the original
// sender, or has the redact power level).
func (a *actor) redactionApplies(ctx context.Context, redaction *Event, view *stateView) bool {
	target, err := a.rs.Event(ctx, redactsOf(redaction))
	if err != nil || target.RoomNID != a.room.nid || target.Type() == spec.MRoomCreate {
		return false
	}
	if target.SenderID() == redaction.SenderID() {
		return true
	}
	return powerLevel(view, string(redaction.SenderID())) >= redactLevel(view)
}

// applyRedactionToState swaps a redacted current state event for its
// redacted form, which auth must use from now on.
func (a *actor) applyRedactionToState(eventID string) {
	for k, e := range a.room.view.base {
		if e.EventID() != eventID {
			continue
		}
		room := storage.Room{NID: a.room.nid, RoomID: a.room.id, Version: string(a.room.version.Version())}
		if c, err := a.rs.Redacted(room, e); err == nil {
			a.room.view.base[k] = c
		}
		return
	}
}

type snapshotResult struct {
	nid         int64
	chainLength int
	size        int
}

// chainCap is how many deltas a snapshot chain may grow to before a full
// copy starts a new one: long enough that big rooms rarely copy, short
// enough that reading a snapshot stays cheap.
func chainCap(size int) int { return max(32, size/64) }

// persist writes a batch in one transaction: the room (for a create), the
// events with their edges, state snapshots, current state, transaction
// IDs, redactions, and the new forward extremities.
func (a *actor) persist(ctx context.Context, done []*built, firstPos int64, bs *batchState) (snapshotResult, error) {
	room := a.room
	snap := snapshotResult{nid: room.snapshotNID, chainLength: room.chainLength, size: room.size}
	replay := newOverlay(room.view)
	err := a.rs.db.Transact(ctx, func(tx *storage.Tx) error {
		pos := firstPos
		for _, b := range done {
			if b.req.create != nil {
				nid, err := tx.CreateRoom(ctx, room.id, string(room.version.Version()), a.rs.now().UnixMilli())
				if errors.Is(err, storage.ErrConflict) {
					return errRoomExists
				}
				if err != nil {
					return err
				}
				room.nid = nid
			}
			for i, e := range b.events {
				e.RoomNID = room.nid
				e.StreamPos = pos
				pos++
				e.StateBeforeNID, e.StateAfterNID = snap.nid, snap.nid
				if e.IsState() {
					// Known only now: an earlier event of this batch may
					// have set the same key, and it has its NID only once
					// stored.
					e.ReplacesNID = 0
					if old := replay.Get(e.Type(), *e.StateKey()); old != nil {
						e.ReplacesNID = old.NID
					}
				}
				row := storage.EventRow{
					RoomNID: room.nid, EventID: e.EventID(), Type: e.Type(), StateKey: e.StateKey(), Sender: string(e.SenderID()),
					Depth: e.Depth(), OriginServerTS: int64(e.OriginServerTS()), StreamPos: e.StreamPos,
					StateBeforeNID: snap.nid, StateAfterNID: snap.nid, Status: storage.EventAccepted,
					ReplacesNID: e.ReplacesNID, RelatesTo: e.RelatesTo, RelType: e.RelType, JSON: e.JSON(),
				}
				nid, err := tx.InsertEvent(ctx, &row)
				if err != nil {
					return fmt.Errorf("inserting %s: %w", e.EventID(), err)
				}
				e.NID = nid
				if err := tx.InsertEdges(ctx, nid, e.PrevEventIDs()); err != nil {
					return err
				}
				if e.IsState() {
					replay.set(e)
					if err := a.writeSnapshot(ctx, tx, e, replay, &snap); err != nil {
						return err
					}
					e.StateAfterNID = snap.nid
					if err := tx.SetStateAfter(ctx, nid, snap.nid); err != nil {
						return err
					}
					if err := tx.UpdateCurrentState(ctx, room.nid, []storage.CurrentStateChange{{
						Type: e.Type(), StateKey: *e.StateKey(), EventNID: nid, Membership: membershipOf(e),
					}}); err != nil {
						return err
					}
				}
				if t := b.txns[i]; t != nil {
					if err := tx.PutTransaction(ctx, t.Localpart, t.DeviceID, t.TxnID, e.EventID(), a.rs.now().UnixMilli()); err != nil {
						return err
					}
				}
			}
			for target, redaction := range b.redacts {
				if err := tx.SetRedactedBy(ctx, target, redaction); err != nil {
					return err
				}
			}
		}
		ext := make([]int64, 0, len(bs.extremities))
		for _, e := range bs.extremities {
			ext = append(ext, e.NID)
		}
		if err := tx.SetForwardExtremities(ctx, room.nid, ext); err != nil {
			return err
		}
		return tx.SetRoomState(ctx, room.nid, snap.nid)
	})
	return snap, err
}

// writeSnapshot stores the state after state event e: a one-entry delta
// on the previous snapshot, or a full copy when the chain is long.
func (a *actor) writeSnapshot(ctx context.Context, tx *storage.Tx, e *Event, replay *stateView, snap *snapshotResult) error {
	if e.ReplacesNID == 0 {
		snap.size++
	}
	var entries []storage.StateEntry
	parent, chain := snap.nid, snap.chainLength+1
	if snap.nid == 0 || chain > chainCap(snap.size) {
		parent, chain = 0, 1
		for k, se := range replay.all() {
			entries = append(entries, storage.StateEntry{Type: k.EventType, StateKey: k.StateKey, EventNID: se.NID})
		}
	} else {
		entries = []storage.StateEntry{{Type: e.Type(), StateKey: *e.StateKey(), EventNID: e.NID}}
	}
	nid, err := tx.InsertSnapshot(ctx, a.room.nid, parent, chain, snap.size, entries)
	if err != nil {
		return err
	}
	snap.nid, snap.chainLength = nid, chain
	return nil
}
