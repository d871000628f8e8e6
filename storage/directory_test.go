package storage_test

import (
	"fmt"
	"testing"

	"github.com/veche/veche/storage"
)

// memberWriter writes member events into a room at the given stream
// positions and keeps the current state in step, as the roomserver does.
type memberWriter struct {
	t   *testing.T
	db  *storage.DB
	seq int
}

func (w *memberWriter) room(id, visibility string) int64 {
	w.t.Helper()
	nid, err := w.db.CreateRoom(w.t.Context(), id, "12", 1)
	if err != nil {
		w.t.Fatal(err)
	}
	if visibility != "private" {
		if err := w.db.SetRoomVisibility(w.t.Context(), nid, visibility); err != nil {
			w.t.Fatal(err)
		}
	}
	return nid
}

func (w *memberWriter) member(roomNID int64, user, membership string, pos int64) {
	w.t.Helper()
	w.seq++
	key := user
	row := storage.EventRow{
		RoomNID: roomNID, EventID: fmt.Sprintf("$e%d", w.seq), Type: "m.room.member", StateKey: &key, Sender: user,
		Depth: int64(w.seq), OriginServerTS: 1, StreamPos: pos,
		JSON: []byte(`{"type":"m.room.member","content":{"membership":"` + membership + `","displayname":"x"}}`),
	}
	nid, err := w.db.InsertEvent(w.t.Context(), &row)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.db.UpdateCurrentState(w.t.Context(), roomNID, []storage.CurrentStateChange{
		{Type: "m.room.member", StateKey: user, EventNID: nid, Membership: membership},
	}); err != nil {
		w.t.Fatal(err)
	}
}

func TestPublishedRoomsCountsAtPosition(t *testing.T) {
	t.Parallel()
	db := open(t)
	w := &memberWriter{t: t, db: db}
	a := w.room("!a:x", "public")
	b := w.room("!b:x", "public")
	hidden := w.room("!hidden:x", "private")
	w.member(a, "@1:x", "join", 1)
	w.member(a, "@2:x", "join", 2)
	w.member(a, "@3:x", "invite", 3)
	w.member(b, "@1:x", "join", 4)
	w.member(hidden, "@1:x", "join", 5)
	// Position 5 is the snapshot; everything below happens after it.
	w.member(a, "@2:x", "leave", 6)
	w.member(a, "@2:x", "join", 7) // left and came back: no change overall
	w.member(a, "@1:x", "leave", 8)
	w.member(a, "@3:x", "join", 9)
	w.member(a, "@4:x", "join", 10)
	w.member(b, "@2:x", "join", 11)
	w.member(b, "@2:x", "leave", 12) // came and went: no change overall
	late := w.room("!late:x", "public")
	w.member(late, "@1:x", "join", 13)

	for _, tc := range []struct {
		at   int64
		want map[string][2]int64 // room → {now, at}
	}{
		{5, map[string][2]int64{"!a:x": {3, 2}, "!b:x": {1, 1}, "!late:x": {1, 0}}},
		{8, map[string][2]int64{"!a:x": {3, 1}, "!b:x": {1, 1}, "!late:x": {1, 0}}},
		{13, map[string][2]int64{"!a:x": {3, 3}, "!b:x": {1, 1}, "!late:x": {1, 1}}},
		{0, map[string][2]int64{"!a:x": {3, 0}, "!b:x": {1, 0}, "!late:x": {1, 0}}},
	} {
		rooms, err := db.PublishedRooms(t.Context(), tc.at)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][2]int64{}
		for _, r := range rooms {
			got[r.RoomID] = [2]int64{r.Joined, r.JoinedAt}
			if r.Version != "12" {
				t.Errorf("version of %s = %q", r.RoomID, r.Version)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("at %d: %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestDirectoryProfiles(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	for _, u := range []string{"ann", "ben", "cid"} {
		createUser(t, db, u)
	}
	for _, f := range []struct{ user, field, value string }{
		{"ann", "displayname", `"Ann"`}, {"ann", "avatar_url", `"mxc://x/a"`}, {"ann", "m.tz", `"UTC"`},
		{"ben", "displayname", `5`},
		{"cid", "displayname", `"Cid"`},
	} {
		if err := db.SetProfileField(ctx, f.user, f.field, []byte(f.value)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.MarkDeactivated(ctx, "cid", false, 1); err != nil {
		t.Fatal(err)
	}
	got, err := db.DirectoryProfiles(ctx, []string{"ann", "ben", "cid", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]storage.DirectoryProfile{"ann": {DisplayName: "Ann", AvatarURL: "mxc://x/a"}, "ben": {}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("profiles = %v, want %v", got, want)
	}
}
