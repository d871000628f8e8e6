package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
	"github.com/tidwall/gjson"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// roomFed moves room events between this server and others: it checks
// what arrives (format, hashes, signatures) before the roomserver checks
// the auth rules, and it fills the gaps — missing prev events, state and
// auth chains — by asking the server that sent an event.
type roomFed struct {
	serverName spec.ServerName
	key        signingkey.Key
	rs         *roomserver.Roomserver
	client     fclient.FederationClient
	keys       gomatrixserverlib.JSONVerifier
	log        logrus.FieldLogger
	now        func() time.Time

	// catchUp serializes gap filling per room: two transactions missing
	// the same events fetch them once.
	mu      sync.Mutex
	catchUp map[string]*sync.Mutex
}

const (
	// maxMissingEvents is how many events one get_missing_events asks for
	// before the state at the event is fetched instead (a wide gap).
	maxMissingEvents = 20
	// fetchParallel bounds concurrent single-event fetches.
	fetchParallel = 8
	// maxAuthRounds bounds how often missing auth events are fetched for
	// one batch (each round goes one step further up the auth chain).
	maxAuthRounds = 8
	// stateFetchThreshold: above this many unknown events, /state is
	// cheaper than fetching them one by one.
	stateFetchThreshold = 50
)

func (rf *roomFed) roomLock(roomID string) *sync.Mutex {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.catchUp == nil {
		rf.catchUp = map[string]*sync.Mutex{}
	}
	m := rf.catchUp[roomID]
	if m == nil {
		m = &sync.Mutex{}
		rf.catchUp[roomID] = m
	}
	return m
}

// userIDForSender maps senders to user IDs without ever returning
// (nil, nil), which gomatrixserverlib's auth code would dereference.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// safely runs fn, turning a panic inside gomatrixserverlib (which some
// malformed remote input can cause) into an error.
func safely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed event: %v", r)
		}
	}()
	return fn()
}

// parsePDU parses an event received over federation in a room version,
// with the checks gomatrixserverlib leaves out (a room ID that parses).
// An event whose content hash fails comes back redacted, as the spec
// requires.
func parsePDU(raw []byte, version gomatrixserverlib.RoomVersion) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, err
	}
	var pdu gomatrixserverlib.PDU
	err = safely(func() error {
		roomID := gjson.GetBytes(raw, "room_id")
		isV12Create := verImpl.DomainlessRoomIDs() && gjson.GetBytes(raw, "type").Str == spec.MRoomCreate && !roomID.Exists()
		if !isV12Create {
			if roomID.Type != gjson.String {
				return errors.New("room_id is missing")
			}
			if _, err := spec.NewRoomID(roomID.Str); err != nil {
				return fmt.Errorf("invalid room_id: %w", err)
			}
		}
		p, err := verImpl.NewEventFromUntrustedJSON(raw)
		if err != nil {
			return err
		}
		if _, err := spec.NewUserID(string(p.SenderID()), true); err != nil {
			return fmt.Errorf("invalid sender: %w", err)
		}
		_ = p.EventID()
		_ = p.RoomID()
		pdu = p
		return nil
	})
	return pdu, err
}

// raws converts the library's event lists.
func raws(evs gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = json.RawMessage(e)
	}
	return out
}

// verify checks the signatures each event needs; it returns one error
// (or nil) per event.
func (rf *roomFed) verify(ctx context.Context, pdus []gomatrixserverlib.PDU) []error {
	errs := make([]error, len(pdus))
	check := func(i int) {
		errs[i] = safely(func() error {
			return gomatrixserverlib.VerifyEventSignatures(ctx, pdus[i], rf.keys, userIDForSender)
		})
	}
	// One event per origin first, alone: that fetches each server's keys
	// once, before the parallel checks would all miss the cache at once.
	seen := map[string]bool{}
	var rest []int
	for i, p := range pdus {
		origin := ""
		if uid, err := spec.NewUserID(string(p.SenderID()), true); err == nil {
			origin = string(uid.Domain())
		}
		if !seen[origin] {
			seen[origin] = true
			check(i)
			continue
		}
		rest = append(rest, i)
	}
	parallel(len(rest), func(j int) { check(rest[j]) })
	return errs
}

// parseVerified parses and verifies events from a remote answer,
// dropping (and logging) those that fail.
func (rf *roomFed) parseVerified(ctx context.Context, raws []json.RawMessage, room storage.Room, from spec.ServerName) []gomatrixserverlib.PDU {
	// Parsing (the reference hash) and signature checks dominate a big
	// join: tens of thousands of events. They run on every core.
	parsed := make([]gomatrixserverlib.PDU, len(raws))
	parallel(len(raws), func(i int) {
		p, err := parsePDU(raws[i], gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			rf.log.WithField("server", from).WithError(err).Debug("Dropping an unparseable event")
			return
		}
		if p.RoomID().String() == room.RoomID {
			parsed[i] = p
		}
	})
	var pdus []gomatrixserverlib.PDU
	for _, p := range parsed {
		if p != nil {
			pdus = append(pdus, p)
		}
	}
	errs := rf.verify(ctx, pdus)
	out := pdus[:0]
	for i, p := range pdus {
		if errs[i] != nil {
			rf.log.WithField("server", from).WithField("event_id", p.EventID()).WithError(errs[i]).Info("Dropping an event whose signatures fail")
			continue
		}
		out = append(out, p)
	}
	return out
}

// parallel runs fn(0..n-1) on every core.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// fetchEvents gets events by ID from a server, verified.
func (rf *roomFed) fetchEvents(ctx context.Context, from spec.ServerName, room storage.Room, ids []string) []gomatrixserverlib.PDU {
	var (
		mu   sync.Mutex
		raws []json.RawMessage
		wg   sync.WaitGroup
		sem  = make(chan struct{}, fetchParallel)
	)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			txn, err := rf.client.GetEvent(ctx, rf.serverName, from, id)
			if err != nil || len(txn.PDUs) == 0 {
				rf.log.WithField("server", from).WithField("event_id", id).WithError(err).Debug("Fetching an event failed")
				return
			}
			mu.Lock()
			raws = append(raws, txn.PDUs[0])
			mu.Unlock()
		}()
	}
	wg.Wait()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var out []gomatrixserverlib.PDU
	for _, p := range rf.parseVerified(ctx, raws, room, from) {
		if want[p.EventID()] { // a server must not slip in other events
			out = append(out, p)
		}
	}
	return out
}

// storeOutliers stores events without their place in the DAG, fetching
// the auth events they need from the server that sent them.
func (rf *roomFed) storeOutliers(ctx context.Context, from spec.ServerName, room storage.Room, pdus []gomatrixserverlib.PDU) error {
	for round := 0; ; round++ {
		_, err := rf.rs.StoreOutliers(ctx, room.RoomID, gomatrixserverlib.RoomVersion(room.Version), pdus)
		var missing *roomserver.MissingEventsError
		if !errors.As(err, &missing) || len(missing.Auth) == 0 || round >= maxAuthRounds {
			return err
		}
		fetched := rf.fetchEvents(ctx, from, room, missing.Auth)
		if len(fetched) == 0 {
			return err
		}
		pdus = append(pdus, fetched...)
	}
}

// input runs one verified remote event into its room, filling gaps in
// the DAG from the server it came from.
func (rf *roomFed) input(ctx context.Context, from spec.ServerName, room storage.Room, pdu gomatrixserverlib.PDU) (roomserver.InputResult, error) {
	res, err := rf.inputOnce(ctx, room, pdu)
	var missing *roomserver.MissingEventsError
	if !errors.As(err, &missing) {
		return res, err
	}
	if missing.EventID == "" {
		return res, mxerr.Forbidden("This server is not in room " + room.RoomID)
	}
	lock := rf.roomLock(room.RoomID)
	lock.Lock()
	defer lock.Unlock()
	// Another transaction may have filled the gap meanwhile.
	if res, err = rf.inputOnce(ctx, room, pdu); !errors.As(err, &missing) {
		return res, err
	}
	log := rf.log.WithField("room_id", room.RoomID).WithField("event_id", pdu.EventID()).WithField("server", from)
	if len(missing.Prev) > 0 {
		rf.fetchMissingPrevs(ctx, from, room, pdu)
		if res, err = rf.inputOnce(ctx, room, pdu); !errors.As(err, &missing) {
			return res, err
		}
	}
	if len(missing.Prev) == 0 {
		// Only auth events are unknown: fetch them as outliers.
		fetched := rf.fetchEvents(ctx, from, room, missing.Auth)
		if err := rf.storeOutliers(ctx, from, room, fetched); err != nil {
			return res, err
		}
		if res, err = rf.inputOnce(ctx, room, pdu); !errors.As(err, &missing) {
			return res, err
		}
	}
	// The gap is too wide: take the state before the event from the
	// server that sent it.
	log.WithField("missing_prev", len(missing.Prev)).Info("Fetching the state at an event to close a gap in the room's history")
	return rf.inputWithRemoteState(ctx, from, room, pdu)
}

func (rf *roomFed) inputOnce(ctx context.Context, room storage.Room, pdu gomatrixserverlib.PDU) (roomserver.InputResult, error) {
	results, err := rf.rs.Input(ctx, room.RoomID, []gomatrixserverlib.PDU{pdu})
	if err != nil {
		return roomserver.InputResult{EventID: pdu.EventID()}, err
	}
	return results[0], nil
}

// fetchMissingPrevs asks for the events between our forward extremities
// and pdu (get_missing_events) and inputs them oldest first.
func (rf *roomFed) fetchMissingPrevs(ctx context.Context, from spec.ServerName, room storage.Room, pdu gomatrixserverlib.PDU) {
	earliest, err := rf.rs.Extremities(ctx, room)
	if err != nil {
		return
	}
	resp, err := rf.client.LookupMissingEvents(ctx, rf.serverName, from, room.RoomID, fclient.MissingEvents{
		Limit: maxMissingEvents, EarliestEvents: earliest, LatestEvents: []string{pdu.EventID()},
	}, gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		rf.log.WithField("server", from).WithField("room_id", room.RoomID).WithError(err).Info("get_missing_events failed")
		return
	}
	gap := rf.parseVerified(ctx, raws(resp.Events), room, from)
	sort.SliceStable(gap, func(i, j int) bool { return gap[i].Depth() < gap[j].Depth() })
	for _, ev := range gap {
		if ev.EventID() == pdu.EventID() {
			continue
		}
		res, err := rf.inputOnce(ctx, room, ev)
		var missing *roomserver.MissingEventsError
		if errors.As(err, &missing) {
			// The oldest event of the gap hangs off history we lack: its
			// state comes from the remote server, then the rest follows.
			res, err = rf.inputWithRemoteState(ctx, from, room, ev)
		}
		if err != nil {
			rf.log.WithField("event_id", ev.EventID()).WithError(err).Info("A missing event could not be input")
			return
		}
		if res.Status == roomserver.InputRejected {
			rf.log.WithField("event_id", ev.EventID()).WithField("reason", res.Reason).Info("A fetched missing event was rejected")
		}
	}
}

// inputWithRemoteState inputs pdu with the state before it as from
// reports it.
func (rf *roomFed) inputWithRemoteState(ctx context.Context, from spec.ServerName, room storage.Room, pdu gomatrixserverlib.PDU) (roomserver.InputResult, error) {
	stateIDs, err := rf.remoteStateBefore(ctx, from, room, pdu.EventID(), pdu.AuthEventIDs())
	if err != nil {
		return roomserver.InputResult{EventID: pdu.EventID()}, err
	}
	return rf.rs.InputWithState(ctx, room.RoomID, pdu, stateIDs)
}

// remoteStateBefore asks a server for the state before an event
// (state_ids), stores the state and auth events this server lacks — and
// extra ones the caller needs — as outliers (one by one, or all of
// /state when many), and returns the state's event IDs.
func (rf *roomFed) remoteStateBefore(ctx context.Context, from spec.ServerName, room storage.Room, eventID string, extra []string) ([]string, error) {
	ids, err := rf.client.LookupStateIDs(ctx, rf.serverName, from, room.RoomID, eventID)
	if err != nil {
		return nil, fmt.Errorf("state_ids from %s: %w", from, err)
	}
	all := append(append(append([]string{}, ids.StateEventIDs...), ids.AuthEventIDs...), extra...)
	known, err := rf.rs.Known(ctx, room, all)
	if err != nil {
		return nil, err
	}
	var unknown []string
	seen := map[string]bool{}
	for _, id := range all {
		if !known[id] && !seen[id] {
			seen[id] = true
			unknown = append(unknown, id)
		}
	}
	var fetched []gomatrixserverlib.PDU
	if len(unknown) > stateFetchThreshold {
		st, err := rf.client.LookupState(ctx, rf.serverName, from, room.RoomID, eventID, gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			return nil, fmt.Errorf("state from %s: %w", from, err)
		}
		for _, p := range rf.parseVerified(ctx, append(raws(st.StateEvents), raws(st.AuthEvents)...), room, from) {
			if seen[p.EventID()] {
				fetched = append(fetched, p)
			}
		}
	} else {
		fetched = rf.fetchEvents(ctx, from, room, unknown)
	}
	if err := rf.storeOutliers(ctx, from, room, fetched); err != nil {
		return nil, err
	}
	if ids.StateEventIDs == nil {
		ids.StateEventIDs = []string{}
	}
	return ids.StateEventIDs, nil
}
