package storage_test

import (
	"fmt"
	"testing"

	"github.com/veche/veche/storage"
)

func BenchmarkUnreadCounts(b *testing.B) {
	db := open(b)
	ctx := b.Context()
	nid, _ := db.CreateRoom(ctx, "!r:x", "12", 1)
	for i := 1; i <= 20; i++ {
		js := fmt.Sprintf(`{"type":"m.room.message","sender":"@a:x","content":{"msgtype":"m.text","body":"message %d with some text"},"depth":%d,"prev_events":["$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],"auth_events":["$yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy","$zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],"hashes":{"sha256":"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq"},"signatures":{"x":{"ed25519:a":"sigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsigsig"}}}`, i, i)
		if _, err := db.InsertEvent(ctx, &storage.EventRow{RoomNID: nid, EventID: fmt.Sprintf("$e%d", i), Type: "m.room.message",
			Sender: "@a:x", Depth: int64(i), StreamPos: int64(i), JSON: []byte(js)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		u, err := db.UnreadCountsIgnoring(ctx, nid, "@b:x", 0, 100, nil)
		if err != nil || u.Total.Notifications != 20 {
			b.Fatal(u, err)
		}
	}
}

func BenchmarkUnreadFloor(b *testing.B) {
	db := open(b)
	ctx := b.Context()
	nid, _ := db.CreateRoom(ctx, "!r:x", "12", 1)
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := db.UnreadFloor(ctx, nid, "@b:x", 0, 100); err != nil {
			b.Fatal(err)
		}
	}
}
