package roomserver_test

import (
	"errors"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
)

// remoteRoom is a v12 room built entirely by another server: create,
// creator join, power levels, public join rules and a message.
type remoteRoom struct {
	r                                 *remote
	create, join, power, rules, hello gomatrixserverlib.PDU
}

func newRemoteRoom(t testing.TB) *remoteRoom {
	r := newRemote(t, "")
	bob := "@bob:remote.example"
	create := r.build(t, bob, "m.room.create", str(""), map[string]any{"room_version": "12"}, []string{}, []string{}, 1)
	r.room = "!" + create.EventID()[1:]
	join := r.build(t, bob, "m.room.member", str(bob), map[string]any{"membership": "join"}, []string{create.EventID()}, []string{}, 2)
	power := r.build(t, bob, "m.room.power_levels", str(""), map[string]any{"users": map[string]any{}, "users_default": 0, "events_default": 0, "state_default": 50},
		[]string{join.EventID()}, []string{join.EventID()}, 3)
	rules := r.build(t, bob, "m.room.join_rules", str(""), map[string]any{"join_rule": "public"},
		[]string{power.EventID()}, []string{join.EventID(), power.EventID()}, 4)
	hello := r.build(t, bob, "m.room.message", nil, map[string]any{"body": "hello"},
		[]string{rules.EventID()}, []string{join.EventID(), power.EventID()}, 5)
	return &remoteRoom{r: r, create: create, join: join, power: power, rules: rules, hello: hello}
}

func TestJoinRemoteRoomThroughOutliers(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	rr := newRemoteRoom(t)
	roomID := rr.r.room

	// Before we hold the DAG, plain input cannot attach anything.
	if _, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{rr.hello}); !errors.Is(err, mxerr.NotFound("")) {
		t.Fatalf("input into an unknown room = %v, want M_NOT_FOUND", err)
	}

	// An invite for a local user arrives out of band first.
	alice := "@alice:test.veche"
	invite := rr.r.build(t, "@bob:remote.example", "m.room.member", str(alice), map[string]any{"membership": "invite"},
		[]string{rr.hello.EventID()}, []string{rr.join.EventID(), rr.power.EventID(), rr.rules.EventID()}, 6)
	if _, err := rs.StoreOutOfBand(ctx, "12", invite); err != nil {
		t.Fatal(err)
	}
	room, err := rs.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := rs.Membership(ctx, room, alice); m != "invite" {
		t.Fatalf("membership after out-of-band invite = %q", m)
	}

	// The join: the state and auth chain become outliers (in any order),
	// then the join event is input with that state before it.
	state := []gomatrixserverlib.PDU{rr.rules, rr.power, rr.join, rr.create, invite}
	results, err := rs.StoreOutliers(ctx, roomID, "12", state)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range results {
		if res.Status != roomserver.InputAccepted && (res.Status != roomserver.InputDuplicate || res.EventID != invite.EventID()) {
			t.Fatalf("outlier %s: %s %s", res.EventID, res.Status, res.Reason)
		}
	}
	aliceJoin := rr.r.build(t, alice, "m.room.member", str(alice), map[string]any{"membership": "join"},
		[]string{invite.EventID()}, []string{rr.power.EventID(), rr.rules.EventID(), invite.EventID()}, 7)
	var ids []string
	for _, e := range state {
		ids = append(ids, e.EventID())
	}
	// A forgotten state event is reported as missing, not guessed.
	if _, err := rs.InputWithState(ctx, roomID, aliceJoin, append(ids, "$nope")); !errors.Is(err, roomserver.ErrMissingEvents) {
		t.Fatalf("input with unknown state = %v", err)
	}
	res, err := rs.InputWithState(ctx, roomID, aliceJoin, ids)
	if err != nil || res.Status != roomserver.InputAccepted {
		t.Fatalf("join = %+v, %v", res, err)
	}
	room, _ = rs.Room(ctx, roomID)
	if m, _ := rs.Membership(ctx, room, alice); m != "join" {
		t.Fatalf("membership after join = %q", m)
	}
	cur, err := rs.CurrentState(ctx, room)
	if err != nil || len(cur) != 5 {
		t.Fatalf("current state has %d events (%v), want 5", len(cur), err)
	}

	// The message between the rules and the invite arrives late: stored as
	// an outlier first, it is promoted when it comes with its state.
	if _, err := rs.StoreOutliers(ctx, roomID, "12", []gomatrixserverlib.PDU{rr.hello}); err != nil {
		t.Fatal(err)
	}
	if e, _ := rs.Event(ctx, rr.hello.EventID()); e == nil || e.StreamPos != 0 {
		t.Fatalf("outlier message = %+v", e)
	}
	// Events after the join attach to the DAG normally.
	next := rr.r.build(t, "@bob:remote.example", "m.room.message", nil, map[string]any{"body": "welcome"},
		[]string{aliceJoin.EventID()}, []string{rr.join.EventID(), rr.power.EventID()}, 8)
	out, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{next})
	if err != nil || out[0].Status != roomserver.InputAccepted {
		t.Fatalf("message after join = %+v, %v", out, err)
	}
	// A message whose prev event is only an outlier needs its state.
	late := rr.r.build(t, "@bob:remote.example", "m.room.message", nil, map[string]any{"body": "late"},
		[]string{rr.hello.EventID()}, []string{rr.join.EventID(), rr.power.EventID()}, 6)
	var missing *roomserver.MissingEventsError
	if _, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{late}); !errors.As(err, &missing) || len(missing.Prev) != 1 {
		t.Fatalf("input after an outlier = %v, want the outlier reported missing", err)
	}
	res, err = rs.InputWithState(ctx, roomID, rr.hello, []string{rr.create.EventID(), rr.join.EventID(), rr.power.EventID(), rr.rules.EventID()})
	if err != nil || res.Status != roomserver.InputAccepted {
		t.Fatalf("promoting the outlier = %+v, %v", res, err)
	}
	if e, _ := rs.Event(ctx, rr.hello.EventID()); e == nil || e.StreamPos == 0 {
		t.Fatalf("promoted message = %+v", e)
	}
	// The auth chain of the join reaches the create event.
	chain, err := rs.AuthChain(ctx, room, []gomatrixserverlib.PDU{aliceJoin})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range chain {
		seen[e.EventID()] = true
	}
	for _, want := range []gomatrixserverlib.PDU{rr.create, rr.join, rr.power, rr.rules, invite} {
		if !seen[want.EventID()] {
			t.Fatalf("auth chain lacks %s %s", want.Type(), want.EventID())
		}
	}
	before, err := rs.StateBefore(ctx, room, next.EventID())
	if err != nil || len(before) != 5 {
		t.Fatalf("state before = %d events, %v", len(before), err)
	}
}

func TestStoreOutliersRejectsBadAuth(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	rr := newRemoteRoom(t)
	// Mallory's power levels claim authority her membership doesn't give.
	mallory := rr.r.build(t, "@mallory:remote.example", "m.room.topic", str(""), map[string]any{"topic": "mine"},
		[]string{rr.rules.EventID()}, []string{rr.join.EventID(), rr.power.EventID()}, 5)
	results, err := rs.StoreOutliers(ctx, rr.r.room, "12", []gomatrixserverlib.PDU{mallory, rr.power, rr.join, rr.create, rr.rules})
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range results {
		wantRejected := res.EventID == mallory.EventID()
		if (res.Status == roomserver.InputRejected) != wantRejected {
			t.Fatalf("%s: %s %s", res.EventID, res.Status, res.Reason)
		}
	}
	// Auth events nobody sent are reported.
	orphan := rr.r.build(t, "@bob:remote.example", "m.room.topic", str(""), map[string]any{"topic": "x"},
		[]string{"$a"}, []string{"$gone"}, 9)
	if _, err := rs.StoreOutliers(ctx, rr.r.room, "12", []gomatrixserverlib.PDU{orphan}); !errors.Is(err, roomserver.ErrMissingEvents) {
		t.Fatalf("orphan outlier = %v", err)
	}
}

func TestBuildTemplate(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	alice, _ := mautrix.NewClient(s.URL, "", "")
	reg, err := alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	alice.SetCredentials(reg.UserID, reg.AccessToken)
	public, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	private, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	eve := "@eve:remote.example"
	proto := func(roomID string) gomatrixserverlib.ProtoEvent {
		return gomatrixserverlib.ProtoEvent{SenderID: eve, RoomID: roomID, Type: "m.room.member", StateKey: str(eve), Content: []byte(`{"membership":"join"}`)}
	}
	ev, auth, err := rs.BuildTemplate(ctx, proto(string(public.RoomID)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.PrevEventIDs()) != 1 || len(auth) < 2 {
		t.Fatalf("template prev=%v auth=%d", ev.PrevEventIDs(), len(auth))
	}
	if _, _, err := rs.BuildTemplate(ctx, proto(string(private.RoomID))); !errors.Is(err, mxerr.Forbidden("")) {
		t.Fatalf("join template for an invite-only room = %v, want M_FORBIDDEN", err)
	}
	if _, _, err := rs.BuildTemplate(ctx, proto("!unknown:test.veche")); !errors.Is(err, mxerr.NotFound("")) {
		t.Fatalf("template in an unknown room = %v", err)
	}
}
