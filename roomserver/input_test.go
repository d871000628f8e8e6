package roomserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
)

var ctx = context.Background()

// remote signs events as another server would.
type remote struct {
	name spec.ServerName
	key  ed25519.PrivateKey
	ver  gomatrixserverlib.IRoomVersion
	room string
	now  time.Time
}

func newRemote(t testing.TB, roomID string) *remote {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &remote{name: "remote.example", key: priv, ver: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12),
		room: roomID, now: time.Now()}
}

// build signs an event with explicit prev and auth events.
func (r *remote) build(t testing.TB, sender, typ string, stateKey *string, content any, prev []string, auth []string, depth int64) gomatrixserverlib.PDU {
	t.Helper()
	raw, _ := json.Marshal(content)
	r.now = r.now.Add(time.Millisecond)
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: r.room, Type: typ, StateKey: stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: auth, Depth: depth}
	ev, err := r.ver.NewEventBuilderFromProtoEvent(&proto).Build(r.now, r.name, "ed25519:1", r.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func str(s string) *string { return &s }

// stateIDs maps "type|state_key" to the event IDs of a room's current
// state, to name auth events of hand-built events.
func stateIDs(t *testing.T, rs *roomserver.Roomserver, roomID string) map[string]string {
	t.Helper()
	room, err := rs.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	state, err := rs.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, e := range state {
		ids[e.Type()+"|"+*e.StateKey()] = e.EventID()
	}
	return ids
}

func TestInputChecksInOrder(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	alice, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	alice.SetCredentials(reg.UserID, reg.AccessToken)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := string(created.RoomID)
	tipResp, err := alice.SendText(ctx, created.RoomID, "welcome")
	if err != nil {
		t.Fatal(err)
	}
	tip, err := rs.Event(ctx, string(tipResp.EventID))
	if err != nil {
		t.Fatal(err)
	}
	ids := stateIDs(t, rs, roomID)
	r := newRemote(t, roomID)
	eve := "@eve:remote.example"
	// v12: the create event is implied, never listed.
	baseAuth := []string{ids["m.room.power_levels|"], ids["m.room.join_rules|"]}

	join := r.build(t, eve, "m.room.member", str(eve), map[string]any{"membership": "join"},
		[]string{tip.EventID()}, baseAuth, tip.Depth()+1)
	msg := r.build(t, eve, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi from afar"},
		[]string{join.EventID()}, append([]string{ids["m.room.power_levels|"]}, join.EventID()), tip.Depth()+2)
	// A message whose auth events leave out the sender's membership fails
	// the first check.
	noMember := r.build(t, eve, "m.room.message", nil, map[string]any{"body": "sneaky"},
		[]string{msg.EventID()}, []string{ids["m.room.power_levels|"]}, tip.Depth()+3)
	results, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{join, msg, noMember, join})
	if err != nil {
		t.Fatal(err)
	}
	want := []roomserver.InputStatus{roomserver.InputAccepted, roomserver.InputAccepted, roomserver.InputRejected, roomserver.InputDuplicate}
	for i, res := range results {
		if res.Status != want[i] {
			t.Fatalf("event %d: %s (%s), want %s", i, res.Status, res.Reason, want[i])
		}
	}
	room, _ := rs.Room(ctx, roomID)
	if m, _ := rs.Membership(ctx, room, eve); m != "join" {
		t.Fatalf("eve's membership after input = %q", m)
	}

	// Alice bans eve locally. A message eve "sent" before learning of it
	// (prev = her join) passes its own history but not the current state.
	if _, err := alice.BanUser(ctx, created.RoomID, &mautrix.ReqBanUser{UserID: id.UserID(eve)}); err != nil {
		t.Fatal(err)
	}
	late := r.build(t, eve, "m.room.message", nil, map[string]any{"body": "did I miss something?"},
		[]string{msg.EventID()}, append([]string{ids["m.room.power_levels|"]}, join.EventID()), tip.Depth()+3)
	results, err = rs.Input(ctx, roomID, []gomatrixserverlib.PDU{late})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Status != roomserver.InputSoftFailed {
		t.Fatalf("late message: %s (%s), want soft-failed", results[0].Status, results[0].Reason)
	}
	// Soft-failed and rejected events are stored but never shown.
	msgs, err := alice.Messages(ctx, created.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range msgs.Chunk {
		if e.ID == id.EventID(late.EventID()) || e.ID == id.EventID(noMember.EventID()) {
			t.Fatalf("unused event %s shown to clients", e.ID)
		}
	}
	var sawRemote bool
	for _, e := range msgs.Chunk {
		sawRemote = sawRemote || e.ID == id.EventID(msg.EventID())
	}
	if !sawRemote {
		t.Fatal("accepted remote message missing from /messages")
	}
	for _, ev := range []gomatrixserverlib.PDU{late, noMember} {
		stored, err := rs.Event(ctx, ev.EventID())
		if err != nil || stored.StreamPos != 0 {
			t.Fatalf("%s stored = %+v, %v", ev.EventID(), stored, err)
		}
	}

	// Unknown prev events: the caller must fetch them first.
	orphan := r.build(t, eve, "m.room.message", nil, map[string]any{"body": "?"},
		[]string{"$unknown"}, append([]string{ids["m.room.power_levels|"]}, join.EventID()), tip.Depth()+4)
	if _, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{orphan}); !errors.Is(err, roomserver.ErrMissingEvents) {
		t.Fatalf("orphan input = %v, want ErrMissingEvents", err)
	}
	// The room still works for local users afterwards.
	if _, err := alice.SendText(ctx, created.RoomID, "still fine"); err != nil {
		t.Fatal(err)
	}
}

func TestInputForkIsResolved(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	alice, _ := mautrix.NewClient(s.URL, "", "")
	reg, err := alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	alice.SetCredentials(reg.UserID, reg.AccessToken)
	eve := "@eve:remote.example"
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := string(created.RoomID)
	ids := stateIDs(t, rs, roomID)
	first, _ := alice.SendText(ctx, created.RoomID, "start")
	tipEv, _ := rs.Event(ctx, string(first.EventID))
	r := newRemote(t, roomID)
	join := r.build(t, eve, "m.room.member", str(eve), map[string]any{"membership": "join"},
		[]string{tipEv.EventID()}, []string{ids["m.room.power_levels|"], ids["m.room.join_rules|"]}, tipEv.Depth()+1)
	if res, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{join}); err != nil || res[0].Status != roomserver.InputAccepted {
		t.Fatalf("join: %+v %v", res, err)
	}
	// Alice talks on; eve, not having seen it, sends from her join: a fork.
	local, _ := alice.SendText(ctx, created.RoomID, "local branch")
	forked := r.build(t, eve, "m.room.message", nil, map[string]any{"body": "remote branch"},
		[]string{join.EventID()}, []string{ids["m.room.power_levels|"], join.EventID()}, tipEv.Depth()+2)
	res, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{forked})
	if err != nil || res[0].Status != roomserver.InputAccepted {
		t.Fatalf("forked message: %+v %v", res, err)
	}
	// The next local event joins both branches.
	next, err := alice.SendText(ctx, created.RoomID, "merge")
	if err != nil {
		t.Fatal(err)
	}
	merged, _ := rs.Event(ctx, string(next.EventID))
	prevs := map[string]bool{}
	for _, p := range merged.PrevEventIDs() {
		prevs[p] = true
	}
	if !prevs[string(local.EventID)] || !prevs[forked.EventID()] {
		t.Fatalf("merge event's prev_events = %v, want both branch tips", merged.PrevEventIDs())
	}
}
