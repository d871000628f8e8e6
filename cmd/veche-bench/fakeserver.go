package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/tlscert"
)

// fakeServer is a minimal resident homeserver for the big-join scenario:
// it holds one pre-generated room with many members and much state, and
// answers just enough of the Server-Server API for another server to join
// it — its keys, make_join, send_join — plus harmless answers to what a
// server may ask after joining (transactions are accepted and dropped,
// missing events and backfill are empty). It does not check X-Matrix
// signatures or auth rules on what it receives: it exists to measure the
// joining server, not to be one.
type fakeServer struct {
	name    spec.ServerName
	key     signingkey.Key
	version gomatrixserverlib.IRoomVersion
	roomID  string
	// GenerateSeconds is how long building and signing the room took.
	GenerateSeconds float64

	mu     sync.Mutex
	events map[string]gomatrixserverlib.PDU
	// state is the room's current state: (type, state key) → event.
	state map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU
	auth  *gomatrixserverlib.AuthEvents
	tip   gomatrixserverlib.PDU
	// joins are the accepted joins, each with the state before it (for
	// /state and /state_ids at the join).
	joins map[string][]gomatrixserverlib.PDU
	// joinAnswer caches the send_join answer's state and auth chain for
	// a tip: building 20,000 events into JSON is the fake's cost, not the
	// joining server's, and must not be measured as the join.
	joinAnswer struct {
		tip         string
		state, auth []json.RawMessage
	}
	// Timings of the last join, for the report.
	makeJoinAt, sendJoinAt, sendJoinDoneAt time.Time
	sendJoinBytes                          int

	requests atomic.Int64
	pdus     atomic.Int64 // PDUs received in transactions
	srv      *http.Server
}

// fakeRoom says what room the fake server generates.
type fakeRoom struct {
	// Members is the number of joined users, @u0 (the creator) to
	// @u<Members-1>.
	Members int
	// State is the total number of state events to reach; what the
	// members and the room's own events leave is filled with custom
	// state events.
	State   int
	Version gomatrixserverlib.RoomVersion
	// Tag goes into the create event, so that every run makes a new room.
	Tag string
}

// benchStateType is the type of the filler state events.
const benchStateType = "org.veche.bench.state"

func newFakeServer(name string, room fakeRoom) (*fakeServer, error) {
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(name)); !ok {
		return nil, fmt.Errorf("invalid server name %q", name)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(room.Version)
	if err != nil {
		return nil, err
	}
	key, err := signingkey.Generate()
	if err != nil {
		return nil, err
	}
	auth, err := gomatrixserverlib.NewAuthEvents(nil)
	if err != nil {
		return nil, err
	}
	f := &fakeServer{
		name: spec.ServerName(name), key: key, version: verImpl, auth: auth,
		events: map[string]gomatrixserverlib.PDU{},
		state:  map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{},
		joins:  map[string][]gomatrixserverlib.PDU{},
	}
	start := time.Now()
	if err := f.generate(room); err != nil {
		return nil, err
	}
	f.GenerateSeconds = time.Since(start).Seconds()
	return f, nil
}

// userID is the ID of member i of the fake room.
func (f *fakeServer) userID(i int) string { return fmt.Sprintf("@u%d:%s", i, f.name) }

// generate builds the room as one chain of events: create, the creator's
// join, power levels, join rules, history visibility, name, the other
// members' joins, then the filler state. Each event passes the auth
// rules, so a joining server that checks them accepts the room.
func (f *fakeServer) generate(room fakeRoom) error {
	creator := f.userID(0)
	createContent := map[string]any{"room_version": string(room.Version), "org.veche.bench.tag": room.Tag}
	if !f.version.DomainlessRoomIDs() {
		f.roomID = fmt.Sprintf("!bench%s:%s", room.Tag, f.name)
	}
	if err := f.add(creator, spec.MRoomCreate, "", createContent); err != nil {
		return err
	}
	if f.version.DomainlessRoomIDs() {
		// v12: the room ID is the create event's reference hash.
		f.roomID = "!" + f.tip.EventID()[1:]
	}
	pl := map[string]any{
		"users_default": 0, "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]int{spec.MRoomPowerLevels: 100, spec.MRoomName: 50},
	}
	if !f.version.PrivilegedCreators() {
		// Before v12 the creator's power comes from the users map; from
		// v12 on creators must not appear in it.
		pl["users"] = map[string]int{creator: 100}
	}
	steps := []struct {
		typ, key string
		content  any
	}{
		{spec.MRoomMember, creator, map[string]string{"membership": spec.Join}},
		{spec.MRoomPowerLevels, "", pl},
		{spec.MRoomJoinRules, "", map[string]string{"join_rule": spec.Public}},
		{spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": "shared"}},
		{spec.MRoomName, "", map[string]string{"name": "veche-bench big room " + room.Tag}},
	}
	for _, s := range steps {
		if err := f.add(creator, s.typ, s.key, s.content); err != nil {
			return err
		}
	}
	for i := 1; i < room.Members; i++ {
		u := f.userID(i)
		if err := f.add(u, spec.MRoomMember, u, map[string]string{"membership": spec.Join, "displayname": fmt.Sprintf("Bench user %d", i)}); err != nil {
			return err
		}
	}
	for i := 0; len(f.state) < room.State; i++ {
		content := map[string]any{"index": i, "note": "filler state of a veche-bench big room"}
		if err := f.add(creator, benchStateType, fmt.Sprintf("k%d", i), content); err != nil {
			return err
		}
	}
	return nil
}

// add builds, signs and checks one event on top of the tip; the caller
// holds no lock (generation runs before serving) or f.mu.
func (f *fakeServer) add(sender, typ, stateKey string, content any) error {
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	prev := []string{}
	var depth int64 = 1
	if f.tip != nil {
		prev, depth = []string{f.tip.EventID()}, f.tip.Depth()+1
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: f.roomID, Type: typ, StateKey: &stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: []string{}, Depth: depth,
	}
	eb := f.version.NewEventBuilderFromProtoEvent(&proto)
	if f.tip != nil {
		if err := eb.AddAuthEvents(f.auth); err != nil {
			return fmt.Errorf("%s %s: %w", typ, stateKey, err)
		}
	}
	ev, err := eb.Build(time.Now(), f.name, f.key.ID, f.key.PrivateKey)
	if err != nil {
		return fmt.Errorf("%s %s: %w", typ, stateKey, err)
	}
	if err := gomatrixserverlib.Allowed(ev, f.auth, userIDForSender); err != nil {
		return fmt.Errorf("%s %s is not allowed: %w", typ, stateKey, err)
	}
	f.accept(ev)
	return nil
}

// accept puts an event at the tip of the room and into its state.
func (f *fakeServer) accept(ev gomatrixserverlib.PDU) {
	f.events[ev.EventID()] = ev
	f.tip = ev
	if ev.StateKey() != nil {
		f.state[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *ev.StateKey()}] = ev
		_ = f.auth.AddEvent(ev)
	}
}

// userIDForSender maps senders to user IDs; it never answers (nil, nil),
// which gomatrixserverlib's auth code would dereference.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// stateEvents is the current state, in a stable order.
func (f *fakeServer) stateEvents() []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(f.state))
	for _, ev := range f.state {
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	return out
}

// authChain is every event the given events' auth events lead to.
func (f *fakeServer) authChain(evs []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	queue := []string{}
	for _, ev := range evs {
		queue = append(queue, ev.AuthEventIDs()...)
	}
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		if ev := f.events[id]; ev != nil {
			out = append(out, ev)
			queue = append(queue, ev.AuthEventIDs()...)
		}
	}
	slices.SortFunc(out, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	return out
}

func jsons(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = ev.JSON()
	}
	return out
}

// listen starts serving the federation API over TLS on ln, with a
// self-signed certificate for the server name (the joining server must
// skip verification, as Veche does with federation.insecure_skip_verify).
func (f *fakeServer) listen(ln net.Listener) error {
	certPEM, keyPEM, err := tlscert.Generate(string(f.name), time.Now())
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	f.srv = &http.Server{
		Handler:           f.routes(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		// Handshake noise from probes is not the benchmark's business.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = f.srv.ServeTLS(ln, "", "") }()
	return nil
}

func (f *fakeServer) close() {
	if f.srv != nil {
		_ = f.srv.Close()
	}
}

func (f *fakeServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/key/v2/server", f.serverKeys)
	mux.HandleFunc("GET /_matrix/key/v2/server/{keyID}", f.serverKeys)
	mux.HandleFunc("GET /_matrix/federation/v1/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON200(w, map[string]any{"server": map[string]string{"name": "veche-bench fake server", "version": "0"}})
	})
	mux.HandleFunc("GET /_matrix/federation/v1/make_join/{roomId}/{userId}", f.makeJoin)
	mux.HandleFunc("PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}", f.sendJoin)
	mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", f.send)
	mux.HandleFunc("GET /_matrix/federation/v1/event/{eventId}", f.event)
	mux.HandleFunc("GET /_matrix/federation/v1/state_ids/{roomId}", f.stateAt(true))
	mux.HandleFunc("GET /_matrix/federation/v1/state/{roomId}", f.stateAt(false))
	mux.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{roomId}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON200(w, map[string]any{"events": []any{}})
	})
	mux.HandleFunc("GET /_matrix/federation/v1/backfill/{roomId}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON200(w, map[string]any{"origin": f.name, "origin_server_ts": spec.AsTimestamp(time.Now()), "pdus": []any{}})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeMatrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Not served by the veche-bench fake server")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		mux.ServeHTTP(w, r)
	})
}

func writeJSON200(w http.ResponseWriter, v any) int {
	data, err := json.Marshal(v)
	if err != nil {
		writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", err.Error())
		return 0
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
	return len(data)
}

func writeMatrixError(w http.ResponseWriter, status int, errcode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	data, _ := json.Marshal(map[string]string{"errcode": errcode, "error": msg})
	_, _ = w.Write(data)
}

// serverKeys is GET /_matrix/key/v2/server: the key, self-signed.
func (f *fakeServer) serverKeys(w http.ResponseWriter, _ *http.Request) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    f.name,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{f.key.ID: {Key: spec.Base64Bytes(f.key.Public())}},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
		ValidUntilTS:  spec.AsTimestamp(time.Now().Add(24 * time.Hour)),
	}
	raw, err := json.Marshal(fields)
	if err == nil {
		raw, err = gomatrixserverlib.SignJSON(string(f.name), f.key.ID, f.key.PrivateKey, raw)
	}
	if err != nil {
		writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}

func (f *fakeServer) knownRoom(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("roomId") != f.roomID {
		writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "Unknown room")
		return false
	}
	return true
}

// makeJoin is GET make_join: a join template on top of the room's tip.
func (f *fakeServer) makeJoin(w http.ResponseWriter, r *http.Request) {
	if !f.knownRoom(w, r) {
		return
	}
	if vers := r.URL.Query()["ver"]; !slices.Contains(vers, string(f.version.Version())) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Room version not supported", "room_version": string(f.version.Version())})
		return
	}
	userID := r.PathValue("userId")
	if _, err := spec.NewUserID(userID, true); err != nil {
		writeMatrixError(w, http.StatusBadRequest, "M_INVALID_PARAM", "Invalid user ID")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.makeJoinAt = time.Now()
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: f.roomID, Type: spec.MRoomMember, StateKey: &userID,
		Content: spec.RawJSON(`{"membership":"join"}`), PrevEvents: []string{f.tip.EventID()}, Depth: f.tip.Depth() + 1,
	}
	eb := f.version.NewEventBuilderFromProtoEvent(&proto)
	if err := eb.AddAuthEvents(f.auth); err != nil {
		writeMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", err.Error())
		return
	}
	proto.AuthEvents = eb.AuthEvents
	writeJSON200(w, map[string]any{"event": proto, "room_version": f.version.Version()})
}

// sendJoin is PUT send_join (v2): the join is taken as it is, and the
// answer is the state before it with its auth chain.
func (f *fakeServer) sendJoin(w http.ResponseWriter, r *http.Request) {
	if !f.knownRoom(w, r) {
		return
	}
	started := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	ev, err := f.version.NewEventFromUntrustedJSON(body)
	if err != nil || ev.EventID() != r.PathValue("eventId") || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		writeMatrixError(w, http.StatusBadRequest, "M_BAD_JSON", fmt.Sprintf("Not a join event for this path: %v", err))
		return
	}
	if m, _ := ev.Membership(); m != spec.Join || ev.RoomID().String() != f.roomID {
		writeMatrixError(w, http.StatusBadRequest, "M_BAD_JSON", "Not a join to this room")
		return
	}
	f.mu.Lock()
	tip := f.tip.EventID()
	if f.joinAnswer.tip != tip {
		state := f.stateEvents()
		f.joinAnswer.tip = tip
		f.joinAnswer.state = jsons(state)
		f.joinAnswer.auth = jsons(f.authChain(append(state, ev)))
	}
	stateBefore := make([]gomatrixserverlib.PDU, 0, len(f.state))
	for _, s := range f.state {
		stateBefore = append(stateBefore, s)
	}
	answer := map[string]any{
		"origin": f.name, "state": f.joinAnswer.state, "auth_chain": f.joinAnswer.auth, "members_omitted": false,
	}
	if _, known := f.events[ev.EventID()]; !known {
		f.joins[ev.EventID()] = stateBefore
		f.accept(ev)
	}
	f.sendJoinAt = started
	f.mu.Unlock()

	n := writeJSON200(w, answer)
	f.mu.Lock()
	f.sendJoinDoneAt, f.sendJoinBytes = time.Now(), n
	f.mu.Unlock()
}

// send accepts a transaction and drops its contents.
func (f *fakeServer) send(w http.ResponseWriter, r *http.Request) {
	var txn struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		writeMatrixError(w, http.StatusBadRequest, "M_NOT_JSON", "Invalid transaction")
		return
	}
	f.pdus.Add(int64(len(txn.PDUs)))
	writeJSON200(w, map[string]any{"pdus": map[string]any{}})
}

// event is GET /event/{eventId}.
func (f *fakeServer) event(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	ev := f.events[r.PathValue("eventId")]
	f.mu.Unlock()
	if ev == nil {
		writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "Unknown event")
		return
	}
	writeJSON200(w, map[string]any{"origin": f.name, "origin_server_ts": spec.AsTimestamp(time.Now()), "pdus": []json.RawMessage{ev.JSON()}})
}

// stateAt answers /state and /state_ids at a join this server accepted;
// the fake keeps no other history of state.
func (f *fakeServer) stateAt(idsOnly bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !f.knownRoom(w, r) {
			return
		}
		f.mu.Lock()
		state, ok := f.joins[r.URL.Query().Get("event_id")]
		var chain []gomatrixserverlib.PDU
		if ok {
			chain = f.authChain(state)
		}
		f.mu.Unlock()
		if !ok {
			writeMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "The veche-bench fake server only knows the state at joins")
			return
		}
		if !idsOnly {
			writeJSON200(w, map[string]any{"pdus": jsons(state), "auth_chain": jsons(chain)})
			return
		}
		ids := func(evs []gomatrixserverlib.PDU) []string {
			out := make([]string, len(evs))
			for i, e := range evs {
				out[i] = e.EventID()
			}
			return out
		}
		writeJSON200(w, map[string]any{"pdu_ids": ids(state), "auth_chain_ids": ids(chain)})
	}
}

// joinTimings is what the fake saw of the last join.
type joinTimings struct {
	makeJoin, sendJoin, sendJoinDone time.Time
	answerBytes                      int
}

func (f *fakeServer) lastJoin() (joinTimings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendJoinDoneAt.IsZero() {
		return joinTimings{}, errors.New("the fake server saw no send_join")
	}
	return joinTimings{f.makeJoinAt, f.sendJoinAt, f.sendJoinDoneAt, f.sendJoinBytes}, nil
}

// stateCount is the size of the room's current state.
func (f *fakeServer) stateCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.state)
}

// describe is a line for the log.
func (f *fakeServer) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "room %s (version %s): %d state events, generated in %.2f s", f.roomID, f.version.Version(), f.stateCount(), f.GenerateSeconds)
	return b.String()
}
