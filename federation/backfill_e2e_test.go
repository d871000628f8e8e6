package federation_test

import (
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// pageBack pages c's /messages backwards from a token to the start of
// the room and returns the events, newest first.
func pageBack(t *testing.T, c *mautrix.Client, roomID id.RoomID, from string, limit int) []*event.Event {
	t.Helper()
	var out []*event.Event
	for pages := 0; pages < 100; pages++ {
		resp, err := c.Messages(bg, roomID, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		out = append(out, resp.Chunk...)
		if resp.End == "" {
			return out
		}
		from = resp.End
	}
	t.Fatal("pagination does not end")
	return nil
}

func bodies(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.EventMessage {
			b, _ := e.Content.Raw["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// TestBackfillOnMessages: a server that joins a room with history holds
// only its state; paging back through /messages fetches the history from
// the other server, in order, and sync does not report it as new.
func TestBackfillOnMessages(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "History"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	// More than one backfill batch, so that the oldest event of the first
	// batch needs the state before it from a.test.
	const n = 70
	var want []string
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("message %d", i)
		if _, err := alice.SendText(bg, roomID, body); err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
	}
	slices.Reverse(want)
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("bob joins over federation: %v", err)
	}

	sync1, err := bob.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	jr, ok := sync1.Rooms.Join[roomID]
	if !ok {
		t.Fatal("the room is not in bob's sync")
	}
	if got := bodies(jr.Timeline.Events); len(got) != 0 {
		t.Fatalf("initial sync timeline has history already: %v", got)
	}

	evs := pageBack(t, bob, roomID, jr.Timeline.PrevBatch, 10)
	if got := bodies(evs); !slices.Equal(got, want) {
		t.Fatalf("history on b.test (%d messages):\n%v\nwant (%d):\n%v", len(got), got, len(want), want)
	}
	if last := evs[len(evs)-1]; last.Type != event.StateCreate {
		t.Errorf("the oldest event is %s, want the create event", last.Type)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].ID == evs[i-1].ID {
			t.Fatalf("event %s twice", evs[i].ID)
		}
	}

	// The history is not news.
	sync2, err := bob.SyncRequest(bg, 0, sync1.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if jr, ok := sync2.Rooms.Join[roomID]; ok && len(jr.Timeline.Events) > 0 {
		t.Fatalf("incremental sync reports %d events: %v", len(jr.Timeline.Events), bodies(jr.Timeline.Events))
	}
	// Paging again reads the stored history without asking a.test.
	if got := bodies(pageBack(t, bob, roomID, jr.Timeline.PrevBatch, 25)); !slices.Equal(got, want) {
		t.Fatalf("second pass: %v", got)
	}
	// The current state is untouched: the room is still named, bob joined.
	state, err := bob.State(bg, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if m := state[event.StateMember][string(bob.UserID)]; m == nil || m.Content.Raw["membership"] != "join" {
		t.Fatalf("bob's membership: %+v", m)
	}
}

// TestBackfillJoinedVisibility: history another server may not see comes
// back redacted; it fills the DAG, and /messages still hides it.
func TestBackfillJoinedVisibility(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	for i := 0; i < 3; i++ {
		if _, err := alice.SendText(bg, roomID, fmt.Sprintf("secret %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	sync1, err := bob.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	evs := pageBack(t, bob, roomID, sync1.Rooms.Join[roomID].Timeline.PrevBatch, 5)
	if got := bodies(evs); len(got) != 0 {
		t.Fatalf("bob reads history from before his join: %v", got)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != event.StateCreate {
		t.Fatalf("the room's creation (shared history) is not shown: %d events", len(evs))
	}
}
