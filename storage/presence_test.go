package storage_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

// setMembers sets the current membership of each user in the room.
func setMembers(t *testing.T, db *storage.DB, room int64, members map[string]string) {
	t.Helper()
	var changes []storage.CurrentStateChange
	i := int64(0)
	for user, m := range members {
		i++
		changes = append(changes, storage.CurrentStateChange{Type: "m.room.member", StateKey: user, EventNID: room*100 + i, Membership: m})
	}
	if err := db.UpdateCurrentState(t.Context(), room, changes); err != nil {
		t.Fatal(err)
	}
}

func TestPresence(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	r1, r2 := createRoom(t, db, "!p1:x"), createRoom(t, db, "!p2:x")
	setMembers(t, db, r1, map[string]string{"@alice:x": "join", "@bob:y": "join", "@carol:x": "invite"})
	setMembers(t, db, r2, map[string]string{"@alice:x": "join", "@dave:z": "join", "@erin:x": "leave"})

	if _, err := db.UserPresence(ctx, "@alice:x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("presence before any: %v", err)
	}
	msg := "lunch"
	rows := []storage.Presence{
		{UserID: "@alice:x", Presence: "online", LastActiveTS: 10, CurrentlyActive: true, UpdatedTS: 10, StreamPos: 3},
		{UserID: "@bob:y", Presence: "unavailable", StatusMsg: &msg, LastActiveTS: 5, UpdatedTS: 11, StreamPos: 4},
		{UserID: "@carol:x", Presence: "online", UpdatedTS: 12, StreamPos: 5},
		{UserID: "@dave:z", Presence: "offline", UpdatedTS: 13, StreamPos: 7},
	}
	for _, r := range rows {
		if err := db.PutPresence(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.UserPresence(ctx, "@bob:y")
	if err != nil || got.Presence != "unavailable" || got.StatusMsg == nil || *got.StatusMsg != "lunch" || got.LastActiveTS != 5 || got.StreamPos != 4 {
		t.Fatalf("bob: %+v %v", got, err)
	}
	// Replacing clears the status message.
	rows[1].StatusMsg, rows[1].StreamPos = nil, 6
	if err := db.PutPresence(ctx, rows[1]); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.UserPresence(ctx, "@bob:y"); got.StatusMsg != nil || got.StreamPos != 6 {
		t.Fatalf("bob after replace: %+v", got)
	}

	users := func(ps []storage.Presence) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.UserID)
		}
		return out
	}
	for _, tt := range []struct {
		forUser     string
		after, upTo int64
		want        []string
	}{
		// alice shares rooms with bob and dave; carol is only invited.
		{"@alice:x", 0, 10, []string{"@alice:x", "@bob:y", "@dave:z"}},
		{"@alice:x", 3, 6, []string{"@bob:y"}},
		{"@alice:x", 6, 6, nil},
		// bob shares r1 with alice only.
		{"@bob:y", 0, 10, []string{"@alice:x", "@bob:y"}},
		// carol shares nothing (invited), so sees only herself.
		{"@carol:x", 0, 10, []string{"@carol:x"}},
		{"@erin:x", 0, 10, nil},
	} {
		ps, err := db.PresenceSince(ctx, tt.forUser, tt.after, tt.upTo)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(users(ps), tt.want) {
			t.Errorf("PresenceSince(%s, %d, %d) = %q, want %q", tt.forUser, tt.after, tt.upTo, users(ps), tt.want)
		}
	}

	sharers, err := db.UsersSharingRoom(ctx, "@alice:x")
	if err != nil || !slices.Equal(sharers, []string{"@alice:x", "@bob:y", "@dave:z"}) {
		t.Fatalf("sharers of alice %q %v", sharers, err)
	}
	if sharers, _ := db.UsersSharingRoom(ctx, "@carol:x"); len(sharers) != 0 {
		t.Fatalf("sharers of carol %q", sharers)
	}
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"@alice:x", "@bob:y", true}, {"@bob:y", "@dave:z", false}, {"@alice:x", "@carol:x", false}, {"@alice:x", "@erin:x", false},
	} {
		if got, err := db.SharesRoom(ctx, tt.a, tt.b); err != nil || got != tt.want {
			t.Errorf("SharesRoom(%s, %s) = %v, %v", tt.a, tt.b, got, err)
		}
	}

	present, err := db.PresentUsers(ctx)
	if err != nil || !slices.Equal(users(present), []string{"@alice:x", "@bob:y", "@carol:x"}) {
		t.Fatalf("present %q %v", users(present), err)
	}
	if pos, err := db.MaxStreamPos(ctx); err != nil || pos != 7 {
		t.Fatalf("MaxStreamPos = %d, %v; want the presence rows' 7", pos, err)
	}
}
