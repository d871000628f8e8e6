package federation_test

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// waitPresence long-polls c's /sync (marking c online) until the
// presence section has an event of user whose content satisfies cond.
func waitPresence(t *testing.T, c *mautrix.Client, user id.UserID, what string, cond func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(bg, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		for _, e := range resp.Presence.Events {
			if e.Type.Type == "m.presence" && e.Sender == user && cond(e.Content.Raw) {
				return
			}
		}
	}
	t.Fatalf("%s: timed out waiting for %s", c.UserID, what)
}

func TestPresenceAcrossServers(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	carol := user(t, a, "carol") // shares no room with bob

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("bob joins over federation: %v", err)
	}
	waitFor(t, alice, created.RoomID, "bob's join on a.test", isMember(bob.UserID, "join"))

	if err := bob.SetPresence(bg, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "brb"}); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, alice, bob.UserID, "bob unavailable on a.test", func(c map[string]any) bool {
		return c["presence"] == "unavailable" && c["status_msg"] == "brb"
	})
	got, err := alice.GetPresence(bg, bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Presence != event.PresenceUnavailable || got.StatusMsg != "brb" || got.CurrentlyActive || got.LastActiveAgo < 0 || got.LastActiveAgo > 60000 {
		t.Fatalf("alice reads bob: %+v", got)
	}
	_, err = carol.GetPresence(bg, bob.UserID)
	if code, errcode := clientErr(t, err); code != 403 || errcode != "M_FORBIDDEN" {
		t.Fatalf("carol reads bob: %d %s", code, errcode)
	}

	// The other way: alice's syncs made her online, which b.test heard.
	waitPresence(t, bob, alice.UserID, "alice online on b.test", func(c map[string]any) bool {
		return c["presence"] == "online" && c["currently_active"] == true
	})
	if got, err := bob.GetPresence(bg, alice.UserID); err != nil || got.Presence != event.PresenceOnline {
		t.Fatalf("bob reads alice: %+v %v", got, err)
	}
}
