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
		resp, err := c.SyncRequest(bg, 5000, since, `{"room":{"include_leave":true}}`, false, event.PresenceOnline)
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
		if lr, ok := resp.Rooms.Leave[roomID]; ok {
			for _, e := range append(lr.State.Events, lr.Timeline.Events...) {
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

func TestLeaveBanAndEphemeralAcrossServers(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, roomID, "bob's join", isMember(bob.UserID, "join"))

	// Typing and read receipts travel as EDUs.
	if _, err := bob.UserTyping(bg, roomID, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitEphemeral(t, alice, roomID, "bob typing", func(e *event.Event) bool {
		ids, _ := e.Content.Raw["user_ids"].([]any)
		return e.Type == event.EphemeralEventTyping && len(ids) == 1 && ids[0] == string(bob.UserID)
	})
	sent, err := alice.SendText(bg, roomID, "read me")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "alice's message", isMessage("read me"))
	if err := bob.SendReceipt(bg, roomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	waitEphemeral(t, alice, roomID, "bob's receipt", func(e *event.Event) bool {
		if e.Type != event.EphemeralEventReceipt {
			return false
		}
		byType, _ := e.Content.Raw[string(sent.EventID)].(map[string]any)
		reads, _ := byType["m.read"].(map[string]any)
		_, ok := reads[string(bob.UserID)]
		return ok
	})

	// Bob leaves; alice's server hears of it.
	if _, err := bob.LeaveRoom(bg, roomID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, roomID, "bob's leave", isMember(bob.UserID, "leave"))
	// Bob comes back (through a.test, since nobody on b.test is joined),
	// then is banned, and cannot return.
	if _, err := alice.SendStateEvent(bg, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "while bob was away"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, string(roomID), nil); err != nil {
		t.Fatalf("rejoining: %v", err)
	}
	var topic event.TopicEventContent
	if err := bob.StateEvent(bg, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "while bob was away" {
		t.Fatalf("bob's view after rejoining: %q, %v", topic.Topic, err)
	}
	if _, err := alice.BanUser(bg, roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "enough"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "the ban on b.test", isMember(bob.UserID, "ban"))
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err == nil {
		t.Fatal("a banned user rejoined")
	}
	if _, err := bob.SendText(bg, roomID, "let me in"); err == nil {
		t.Fatal("a banned user sent a message")
	}
}

// waitEphemeral long-polls /sync until an ephemeral event of the room
// matches.
func waitEphemeral(t *testing.T, c *mautrix.Client, roomID id.RoomID, what string, cond func(*event.Event) bool) {
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
			for _, e := range jr.Ephemeral.Events {
				_ = e.Content.ParseRaw(e.Type)
				if cond(e) {
					return
				}
			}
		}
	}
	t.Fatalf("%s: timed out waiting for %s", c.UserID, what)
}
