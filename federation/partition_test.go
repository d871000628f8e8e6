package federation_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// stateOf is a server's current state of a room: "type|state_key" →
// event ID.
func stateOf(t *testing.T, s *testserver.Server, roomID id.RoomID) map[string]string {
	t.Helper()
	rs := s.Roomserver()
	room, err := rs.Room(bg, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	evs, err := rs.CurrentState(bg, room)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range evs {
		out[e.Type()+"|"+*e.StateKey()] = e.EventID()
	}
	return out
}

func setPowerLevels(t *testing.T, c *mautrix.Client, roomID id.RoomID, users map[id.UserID]int) id.EventID {
	t.Helper()
	var pl event.PowerLevelsEventContent
	if err := c.StateEvent(bg, roomID, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	for u, lvl := range users {
		pl.SetUserLevel(u, lvl)
	}
	resp, err := c.SendStateEvent(bg, roomID, event.StatePowerLevels, "", &pl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// TestPartitionHealsToOneState splits three servers, lets both sides
// change the power levels, the topic and a membership concurrently, and
// checks that once they talk again every server holds the same state —
// the one state resolution v2 gives (spec: room version 12 uses v2.1).
func TestPartitionHealsToOneState(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test", "c.test"})
	a, b, c := servers[0], servers[1], servers[2]
	alice, bob, carol := user(t, a, "alice"), user(t, b, "bob"), user(t, c, "carol")

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "start"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	for _, u := range []*mautrix.Client{bob, carol} {
		if _, err := u.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
			t.Fatal(err)
		}
	}
	setPowerLevels(t, alice, roomID, map[id.UserID]int{carol.UserID: 100})
	if _, err := alice.SendText(bg, roomID, "everyone is here"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, carol, roomID, "the power levels on c.test", isMessage("everyone is here"))
	waitFor(t, bob, roomID, "the power levels on b.test", isMessage("everyone is here"))

	// Partition 1: c.test is away while alice demotes carol.
	c.Down()
	demotion := setPowerLevels(t, alice, roomID, map[id.UserID]int{carol.UserID: 0})
	if _, err := alice.SendStateEvent(bg, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "from A"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "the demotion on b.test", func(e *event.Event) bool { return e.ID == demotion })

	// Partition 2: a.test is away while carol, still powerful in her view,
	// changes the topic and kicks bob.
	a.Down()
	c.Up()
	if _, err := carol.SendStateEvent(bg, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "from C"}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.KickUser(bg, roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "partition"}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.SendText(bg, roomID, "carol was here"); err != nil {
		t.Fatal(err)
	}
	// (bob's server gets carol's topic and the kick, soft-fails both
	// since carol is demoted there, and in c.test's view bob is gone, so
	// the message goes to a.test alone.)

	// Heal.
	a.Up()
	waitFor(t, alice, roomID, "carol's message on a.test", isMessage("carol was here"))
	waitFor(t, carol, roomID, "the demotion on c.test", func(e *event.Event) bool { return e.ID == demotion })
	// Everyone holds the same state…
	sa, sb, sc := stateOf(t, a, roomID), stateOf(t, b, roomID), stateOf(t, c, roomID)
	for k, v := range sa {
		if sb[k] != v || sc[k] != v {
			t.Errorf("%s: a=%s b=%s c=%s", k, v, sb[k], sc[k])
		}
	}
	if len(sa) != len(sb) || len(sa) != len(sc) {
		t.Fatalf("state sizes differ: %d %d %d", len(sa), len(sb), len(sc))
	}
	// …and it is the one where alice's demotion came first.
	var topic event.TopicEventContent
	if err := bob.StateEvent(bg, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "from A" {
		t.Fatalf("topic = %q, %v", topic.Topic, err)
	}
	members, err := alice.JoinedMembers(bg, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := members.Joined[bob.UserID]; !ok {
		t.Fatalf("bob was kicked by a demoted carol: %v", members.Joined)
	}
}
