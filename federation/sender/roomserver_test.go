package sender

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/roomserver"
)

// TestRoomserverEventsReachARemoteMember runs the real roomserver: a
// local user creates a public room, a remote user's join arrives through
// Input (as federation will deliver it), and the local user's next
// message goes out to the remote server as the signed event itself.
func TestRoomserverEventsReachARemoteMember(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetLevel(logrus.PanicLevel)
	rs := roomserver.New(roomserver.Deps{DB: e.db, ServerName: local, Key: key, Stream: e.st, Log: quiet})
	t.Cleanup(rs.Stop)
	e.sender()
	ctx := t.Context()

	roomID, err := rs.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: alice, Preset: roomserver.PresetPublicChat,
		CreatorMember: json.RawMessage(`{"membership":"join"}`)})
	if err != nil {
		t.Fatal(err)
	}
	e.synced()
	room, err := rs.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	state, err := rs.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	var tip *roomserver.Event
	for _, ev := range state {
		ids[ev.Type()] = ev.EventID()
		if tip == nil || ev.Depth() > tip.Depth() {
			tip = ev
		}
	}

	// remote.example's user joins.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12)
	eve := "@eve:remote.example"
	proto := gomatrixserverlib.ProtoEvent{SenderID: eve, RoomID: roomID, Type: spec.MRoomMember, StateKey: &eve,
		Content: spec.RawJSON(`{"membership":"join"}`), PrevEvents: []string{tip.EventID()},
		AuthEvents: []string{ids[spec.MRoomPowerLevels], ids[spec.MRoomJoinRules]}, Depth: tip.Depth() + 1}
	join, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote.example", "ed25519:1", priv)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{join})
	if err != nil || res[0].Status != roomserver.InputAccepted {
		t.Fatalf("remote join: %+v %v", res, err)
	}
	e.synced()

	msg, err := rs.Send(ctx, roomID, roomserver.Build{Sender: alice, Type: "m.room.message",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"welcome, eve"}`)})
	if err != nil {
		t.Fatal(err)
	}
	c := e.client.next(t, "remote.example")
	if len(c.txn.PDUs) != 1 {
		t.Fatalf("transaction %+v", c.txn)
	}
	got, err := ver.NewEventFromTrustedJSON(c.txn.PDUs[0], false)
	if err != nil {
		t.Fatal(err)
	}
	if got.EventID() != msg.EventID() || got.RoomID().String() != roomID || string(got.SenderID()) != alice {
		t.Fatalf("sent %s in %s by %s, want %s", got.EventID(), got.RoomID(), got.SenderID(), msg.EventID())
	}
	// The room's creation happened before anyone remote was there, and
	// eve's own join is remote.example's to send.
	e.client.none(t, "remote.example")
}
