package storage_test

import (
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

func TestMissingPrevEventsAndMinStreamPos(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	if low, err := db.MinStreamPos(ctx); err != nil || low != 0 {
		t.Fatalf("min of an empty stream = %d, %v", low, err)
	}
	room := createRoom(t, db, "!gaps:x")
	insert := func(id string, pos int64, status int) int64 {
		t.Helper()
		nid, err := db.InsertEvent(ctx, &storage.EventRow{RoomNID: room, EventID: id, Type: "m.room.message", Sender: "@a:x",
			Depth: 1, StreamPos: pos, Status: status, JSON: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		return nid
	}
	a := insert("$a", 5, storage.EventAccepted)
	insert("$outlier", 0, storage.EventOutlier)
	insert("$rejected", 0, storage.EventRejected)
	b := insert("$b", -3, storage.EventAccepted)
	if err := db.InsertEdges(ctx, a, []string{"$b", "$outlier", "$rejected", "$unknown"}); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertEdges(ctx, b, []string{"$unknown", "$older"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		nids []int64
		want []string
	}{
		{nil, nil},
		{[]int64{a}, []string{"$outlier", "$unknown"}},
		{[]int64{a, b}, []string{"$older", "$outlier", "$unknown"}},
	}
	for _, tt := range tests {
		got, err := db.MissingPrevEvents(ctx, tt.nids)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("MissingPrevEvents(%v) = %v, %v; want %v", tt.nids, got, err, tt.want)
		}
	}
	if low, err := db.MinStreamPos(ctx); err != nil || low != -3 {
		t.Fatalf("min stream position = %d, %v; want -3", low, err)
	}
}

func TestSnapshotMembersOf(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!members:x")
	base, err := db.InsertSnapshot(ctx, room, 0, 1, 4, []storage.StateEntry{
		{Type: "m.room.create", StateKey: "", EventNID: 1},
		{Type: "m.room.member", StateKey: "@a:x", EventNID: 2},
		{Type: "m.room.member", StateKey: "@b:remote.example", EventNID: 3},
		{Type: "m.room.member", StateKey: "@c:remote.example:8448", EventNID: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	next, err := db.InsertSnapshot(ctx, room, base, 2, 5, []storage.StateEntry{
		{Type: "m.room.member", StateKey: "@b:remote.example", EventNID: 5},
		{Type: "m.room.member", StateKey: "@d:remote.example", EventNID: 6},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		snap   int64
		server string
		want   map[string]int64
	}{
		{base, "remote.example", map[string]int64{"@b:remote.example": 3}},
		{next, "remote.example", map[string]int64{"@b:remote.example": 5, "@d:remote.example": 6}},
		{next, "remote.example:8448", map[string]int64{"@c:remote.example:8448": 4}},
		{next, "example", map[string]int64{}},
		{0, "x", map[string]int64{}},
	}
	for _, tt := range tests {
		got, err := db.SnapshotMembersOf(ctx, tt.snap, tt.server)
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("SnapshotMembersOf(%d, %s) = %v, %v; want %v", tt.snap, tt.server, got, err, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("SnapshotMembersOf(%d, %s) = %v; want %v", tt.snap, tt.server, got, tt.want)
			}
		}
	}
}

func TestRedactionsOf(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!redactions:x")
	other := createRoom(t, db, "!other:x")
	for i, r := range []struct {
		room   int64
		id, js string
		pos    int64
		status int
		evType string
	}{
		{room, "$v11", `{"type":"m.room.redaction","content":{"redacts":"$t1"}}`, 1, storage.EventAccepted, "m.room.redaction"},
		{room, "$v10", `{"type":"m.room.redaction","redacts":"$t2","content":{}}`, 2, storage.EventAccepted, "m.room.redaction"},
		{room, "$unused", `{"type":"m.room.redaction","content":{"redacts":"$t3"}}`, 0, storage.EventRejected, "m.room.redaction"},
		{other, "$elsewhere", `{"type":"m.room.redaction","content":{"redacts":"$t4"}}`, 3, storage.EventAccepted, "m.room.redaction"},
		{room, "$msg", `{"type":"m.room.message","content":{"redacts":"$t5"}}`, 4, storage.EventAccepted, "m.room.message"},
	} {
		if _, err := db.InsertEvent(ctx, &storage.EventRow{RoomNID: r.room, EventID: r.id, Type: r.evType, Sender: "@a:x",
			Depth: int64(i), StreamPos: r.pos, Status: r.status, JSON: []byte(r.js)}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := db.RedactionsOf(ctx, room, []string{"$t1", "$t2", "$t3", "$t4", "$t5", "$t6"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.EventID)
	}
	if !slices.Equal(got, []string{"$v11", "$v10"}) {
		t.Fatalf("redactions %v", got)
	}
}
