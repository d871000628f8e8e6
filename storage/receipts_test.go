package storage_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

// roomWithEvents creates a room whose events are described by evs, the
// i-th at stream position base+i.
type testEvent struct {
	typ, sender, content string
	stateKey             *string
	relType, relatesTo   string
}

func insertEvents(t *testing.T, db *storage.DB, roomNID, base int64, evs []testEvent) []string {
	t.Helper()
	var ids []string
	for i, e := range evs {
		pos := base + int64(i)
		id := fmt.Sprintf("$e%d_%d", roomNID, pos)
		if e.content == "" {
			e.content = `{}`
		}
		js, _ := json.Marshal(map[string]any{"type": e.typ, "sender": e.sender, "content": json.RawMessage(e.content)})
		_, err := db.InsertEvent(t.Context(), &storage.EventRow{
			RoomNID: roomNID, EventID: id, Type: e.typ, StateKey: e.stateKey, Sender: e.sender, Depth: pos,
			OriginServerTS: pos, StreamPos: pos, RelType: e.relType, RelatesTo: e.relatesTo, JSON: js,
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func createRoom(t *testing.T, db *storage.DB, id string) int64 {
	t.Helper()
	nid, err := db.CreateRoom(t.Context(), id, "12", 1)
	if err != nil {
		t.Fatal(err)
	}
	return nid
}

func putReceipt(t *testing.T, db *storage.DB, r storage.Receipt) bool {
	t.Helper()
	ok, err := db.PutReceipt(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

type receiptKey struct{ user, typ, thread, event string }

func keys(rs []storage.Receipt) map[receiptKey]bool {
	out := map[receiptKey]bool{}
	for _, r := range rs {
		out[receiptKey{r.UserID, r.Type, r.ThreadID, r.EventID}] = true
	}
	return out
}

func TestReceiptsNeverMoveBackwards(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!a:x")
	const alice = "@alice:x"
	r := func(typ, thread, event string, eventPos, streamPos int64) storage.Receipt {
		return storage.Receipt{RoomNID: room, UserID: alice, Type: typ, ThreadID: thread, EventID: event,
			EventPos: eventPos, TS: 1000 + streamPos, StreamPos: streamPos}
	}
	if !putReceipt(t, db, r(storage.ReceiptRead, "", "$3", 3, 10)) {
		t.Fatal("first receipt not stored")
	}
	if putReceipt(t, db, r(storage.ReceiptRead, "", "$2", 2, 11)) || putReceipt(t, db, r(storage.ReceiptRead, "", "$3", 3, 12)) {
		t.Fatal("a receipt for an older or the same event was stored")
	}
	got, err := db.UserReceipts(ctx, room, alice)
	if err != nil || len(got) != 1 || got[0].EventID != "$3" || got[0].StreamPos != 10 || got[0].TS != 1010 {
		t.Fatalf("receipts = %+v, %v", got, err)
	}
	if !putReceipt(t, db, r(storage.ReceiptRead, "", "$5", 5, 13)) {
		t.Fatal("a newer receipt was not stored")
	}
	// Each (type, thread) moves on its own (spec: threaded receipts).
	if !putReceipt(t, db, r(storage.ReceiptRead, storage.ThreadMain, "$2", 2, 14)) ||
		!putReceipt(t, db, r(storage.ReceiptRead, "$root", "$1", 1, 15)) ||
		!putReceipt(t, db, r(storage.ReceiptReadPrivate, "", "$4", 4, 16)) {
		t.Fatal("threaded or private receipts did not start on their own")
	}
	got, err = db.UserReceipts(ctx, room, alice)
	want := map[receiptKey]bool{
		{alice, "m.read", "", "$5"}: true, {alice, "m.read", "main", "$2"}: true,
		{alice, "m.read", "$root", "$1"}: true, {alice, "m.read.private", "", "$4"}: true,
	}
	if err != nil || !maps.Equal(keys(got), want) {
		t.Fatalf("receipts = %+v, %v", got, err)
	}
}

func TestReceiptsSince(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room1, room2, room3 := createRoom(t, db, "!1:x"), createRoom(t, db, "!2:x"), createRoom(t, db, "!3:x")
	put := func(room int64, user, typ, thread, event string, eventPos, streamPos int64) {
		t.Helper()
		putReceipt(t, db, storage.Receipt{RoomNID: room, UserID: user, Type: typ, ThreadID: thread, EventID: event,
			EventPos: eventPos, TS: 1, StreamPos: streamPos})
	}
	put(room1, "@alice:x", "m.read", "", "$a1", 1, 10)
	put(room1, "@alice:x", "m.read.private", "", "$a2", 2, 11)
	put(room1, "@bob:x", "m.read", "main", "$b1", 1, 12)
	put(room2, "@bob:x", "m.read.private", "", "$b2", 2, 13)
	put(room3, "@bob:x", "m.read", "", "$b3", 3, 14)

	since := func(rooms []int64, after, upTo int64, user string) map[receiptKey]bool {
		t.Helper()
		rs, err := db.ReceiptsSince(ctx, rooms, after, upTo, user)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(rs); i++ {
			if rs[i].StreamPos < rs[i-1].StreamPos {
				t.Fatalf("receipts not oldest first: %+v", rs)
			}
		}
		return keys(rs)
	}
	both := []int64{room1, room2}
	// Private receipts only reach their owner.
	if got, want := since(both, 0, 100, "@alice:x"), map[receiptKey]bool{
		{"@alice:x", "m.read", "", "$a1"}: true, {"@alice:x", "m.read.private", "", "$a2"}: true, {"@bob:x", "m.read", "main", "$b1"}: true,
	}; !maps.Equal(got, want) {
		t.Fatalf("alice sees %v, want %v", got, want)
	}
	if got, want := since(both, 0, 100, "@bob:x"), map[receiptKey]bool{
		{"@alice:x", "m.read", "", "$a1"}: true, {"@bob:x", "m.read", "main", "$b1"}: true, {"@bob:x", "m.read.private", "", "$b2"}: true,
	}; !maps.Equal(got, want) {
		t.Fatalf("bob sees %v, want %v", got, want)
	}
	// The range is (after, upTo].
	if got, want := since(both, 10, 12, "@alice:x"), map[receiptKey]bool{
		{"@alice:x", "m.read.private", "", "$a2"}: true, {"@bob:x", "m.read", "main", "$b1"}: true,
	}; !maps.Equal(got, want) {
		t.Fatalf("(10, 12] = %v, want %v", got, want)
	}
	if got := since(both, 12, 12, "@bob:x"); len(got) != 0 {
		t.Fatalf("empty range = %v", got)
	}
	if got := since(nil, 0, 100, "@bob:x"); len(got) != 0 {
		t.Fatalf("no rooms = %v", got)
	}
	// An update moves the receipt to its new stream position.
	put(room1, "@alice:x", "m.read", "", "$a9", 9, 20)
	if got, want := since(both, 14, 100, "@bob:x"), map[receiptKey]bool{{"@alice:x", "m.read", "", "$a9"}: true}; !maps.Equal(got, want) {
		t.Fatalf("after the update = %v, want %v", got, want)
	}
	if got := since(both, 0, 100, "@bob:x"); got[receiptKey{"@alice:x", "m.read", "", "$a1"}] {
		t.Fatal("the replaced receipt is still returned")
	}
}

func TestUnreadBuildingBlocks(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	room := createRoom(t, db, "!a:x")
	const alice, bob = "@alice:x", "@bob:x"
	self := alice
	msg := `{"msgtype":"m.text","body":"hi"}`
	ids := insertEvents(t, db, room, 1, []testEvent{
		{typ: "m.room.member", sender: alice, stateKey: &self, content: `{"membership":"join"}`},    // 1
		{typ: "m.room.message", sender: bob, content: msg},                                          // 2
		{typ: "m.room.name", sender: bob, stateKey: new(string), content: `{"name":"n"}`},           // 3 state
		{typ: "m.room.message", sender: bob, content: msg},                                          // 4 redacted below
		{typ: "m.room.message", sender: alice, content: msg},                                        // 5 own
		{typ: "m.room.message", sender: bob, content: msg, relType: "m.thread", relatesTo: "$e1_2"}, // 6
	})
	if err := db.SetRedactedBy(ctx, ids[3], "$redaction"); err != nil {
		t.Fatal(err)
	}
	// Candidates: others' non-state, unredacted events, oldest first.
	rows, err := db.UnreadCandidates(ctx, room, alice, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.EventID)
	}
	if want := []string{ids[1], ids[5]}; !slices.Equal(got, want) {
		t.Fatalf("candidates = %v, want %v", got, want)
	}
	// The floor: her own message (not her join, a state event).
	floor, version, err := db.UnreadFloor(ctx, room, alice, 0, 10)
	if err != nil || floor != 5 || version != 0 {
		t.Fatalf("floor = %d (receipts %d), %v; want 5", floor, version, err)
	}
	if floor, _, _ := db.UnreadFloor(ctx, room, alice, 0, 4); floor != 0 {
		t.Fatalf("floor before her message = %d, want 0", floor)
	}
	// An unthreaded receipt past it moves the floor and the version.
	putReceipt(t, db, storage.Receipt{RoomNID: room, UserID: alice, Type: "m.read", EventID: ids[5], EventPos: 6, StreamPos: 100})
	if floor, version, _ := db.UnreadFloor(ctx, room, alice, 0, 10); floor != 6 || version != 100 {
		t.Fatalf("floor after receipt = %d (receipts %d), want 6 (100)", floor, version)
	}
	putReceipt(t, db, storage.Receipt{RoomNID: room, UserID: alice, Type: "m.read.private", ThreadID: ids[1], EventID: ids[5], EventPos: 6, StreamPos: 101})
	byThread, err := db.ThreadReceipts(ctx, room, alice)
	if err != nil || byThread[""] != 6 || byThread[ids[1]] != 6 || len(byThread) != 2 {
		t.Fatalf("thread receipts = %v, %v", byThread, err)
	}
}

func TestIgnoredUsers(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	got, err := db.IgnoredUsers(ctx, "alice")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("without account data: %v, %v", got, err)
	}
	set := func(content string) {
		t.Helper()
		if err := db.PutAccountData(ctx, "alice", "", "m.ignored_user_list", json.RawMessage(content), 1); err != nil {
			t.Fatal(err)
		}
	}
	set(`{"ignored_users":{"@bob:x":{},"@carol:y":{}}}`)
	got, err = db.IgnoredUsers(ctx, "alice")
	if err != nil || !maps.Equal(got, map[string]bool{"@bob:x": true, "@carol:y": true}) {
		t.Fatalf("ignored = %v, %v", got, err)
	}
	// Content of the wrong shape ignores nobody rather than failing sync.
	set(`{"ignored_users":["@bob:x"]}`)
	got, err = db.IgnoredUsers(ctx, "alice")
	if err != nil || len(got) != 0 {
		t.Fatalf("ignored from malformed content = %v, %v", got, err)
	}
	// Room account data of that type is not the list.
	if err := db.PutAccountData(ctx, "alice", "!r:x", "m.ignored_user_list", json.RawMessage(`{"ignored_users":{"@dan:x":{}}}`), 2); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.IgnoredUsers(ctx, "alice"); got["@dan:x"] {
		t.Fatal("room account data counted as the ignore list")
	}
}

func TestMaxReceiptStreamPos(t *testing.T) {
	t.Parallel()
	db := open(t)
	if p, err := db.MaxReceiptStreamPos(t.Context()); err != nil || p != 0 {
		t.Fatalf("empty = %d, %v", p, err)
	}
	room := createRoom(t, db, "!a:x")
	putReceipt(t, db, storage.Receipt{RoomNID: room, UserID: "@a:x", Type: "m.read", EventID: "$x", EventPos: 1, StreamPos: 42})
	if p, err := db.MaxReceiptStreamPos(t.Context()); err != nil || p != 42 {
		t.Fatalf("max = %d, %v", p, err)
	}
}
