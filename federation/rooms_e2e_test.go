package federation_test

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

var bg = ctx

// user registers a mautrix client on a test server.
func user(t *testing.T, s *testserver.Server, name string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.RegisterDummy(bg, &mautrix.ReqRegister[any]{Username: name, Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetCredentials(reg.UserID, reg.AccessToken)
	return c
}

// waitFor long-polls c's /sync until cond holds for some timeline event
// of the room, failing after a generous deadline (a safety net, not a
// synchronization mechanism: each sync returns as soon as news arrives).
func waitFor(t *testing.T, c *mautrix.Client, roomID id.RoomID, what string, cond func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(bg, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok {
			for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
				e.RoomID = roomID
				if cond(e) {
					return e
				}
			}
		}
		if ir, ok := resp.Rooms.Invite[roomID]; ok {
			for _, e := range ir.State.Events {
				e.RoomID = roomID
				if cond(e) {
					return e
				}
			}
		}
	}
	t.Fatalf("%s: timed out waiting for %s", c.UserID, what)
	return nil
}

func isMessage(body string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.EventMessage {
			return false
		}
		b, _ := e.Content.Raw["body"].(string)
		return b == body
	}
}

func isMember(userID id.UserID, membership string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.StateMember || e.StateKey == nil || *e.StateKey != string(userID) {
			return false
		}
		m, _ := e.Content.Raw["membership"].(string)
		return m == membership
	}
}

func TestJoinRemoteRoomAndTalk(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Town square"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := alice.SendText(bg, roomID, "before bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("bob joins over federation: %v", err)
	}
	waitFor(t, alice, roomID, "bob's join on a.test", isMember(bob.UserID, "join"))
	state, err := bob.State(bg, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if name := state[event.StateRoomName][""]; name == nil || name.Content.Raw["name"] != "Town square" {
		t.Fatalf("bob's view of the room name: %+v", name)
	}

	if _, err := alice.SendText(bg, roomID, "hello bob"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "alice's message on b.test", isMessage("hello bob"))
	if _, err := bob.SendText(bg, roomID, "hello alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, roomID, "bob's message on a.test", isMessage("hello alice"))
}

func TestInviteRejectAndJoinAcrossServers(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")

	// A private room: bob can only come in by invitation.
	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err == nil {
		t.Fatal("bob joined an invite-only room uninvited")
	}
	if _, err := alice.InviteUser(bg, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("inviting a remote user: %v", err)
	}
	inv := waitFor(t, bob, roomID, "the invite on b.test", isMember(bob.UserID, "invite"))
	_ = inv
	// Bob rejects: the leave goes back through a.test.
	if _, err := bob.LeaveRoom(bg, roomID); err != nil {
		t.Fatalf("rejecting a remote invite: %v", err)
	}
	waitFor(t, alice, roomID, "bob's rejection on a.test", isMember(bob.UserID, "leave"))

	// Invited again, bob accepts: the join goes through the inviter's
	// server without the client naming it.
	if _, err := alice.InviteUser(bg, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "the second invite", isMember(bob.UserID, "invite"))
	if _, err := bob.JoinRoom(bg, string(roomID), nil); err != nil {
		t.Fatalf("accepting a remote invite: %v", err)
	}
	waitFor(t, alice, roomID, "bob's join on a.test", isMember(bob.UserID, "join"))
	members, err := bob.JoinedMembers(bg, roomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("bob's view of the members: %+v, %v", members, err)
	}
}

func TestRestrictedJoinOverFederation(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	eve := user(t, b, "eve")

	space, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Members"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, string(space.RoomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, space.RoomID, "bob in the space", isMember(bob.UserID, "join"))
	restricted, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space.RoomID)}},
		}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eve.JoinRoom(bg, string(restricted.RoomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err == nil {
		t.Fatal("eve, in no allowed room, joined a restricted room")
	}
	if _, err := bob.JoinRoom(bg, string(restricted.RoomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("bob, in the allowed room, could not join: %v", err)
	}
	join := waitFor(t, alice, restricted.RoomID, "bob's restricted join", isMember(bob.UserID, "join"))
	if via, _ := join.Content.Raw["join_authorised_via_users_server"].(string); via != string(alice.UserID) {
		t.Fatalf("join authorised via %q, want alice", via)
	}
}

func ptr[T any](v T) *T { return &v }
