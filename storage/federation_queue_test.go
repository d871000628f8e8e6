package storage_test

import (
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

func TestStreamEventsAndJoinedServers(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!a:x")
	member := func(user, membership string) testEvent {
		return testEvent{typ: "m.room.member", sender: user, stateKey: &user, content: `{"membership":"` + membership + `"}`}
	}
	ids := insertEvents(t, db, room, 1, []testEvent{
		member("@alice:x", "join"),
		{typ: "m.room.message", sender: "@alice:x"},
		member("@bob:remote.example:8448", "join"),
		member("@carol:other.example", "invite"),
		{typ: "m.room.message", sender: "@bob:remote.example:8448"},
	})
	// A rejected event is not in the stream's output.
	if _, err := db.InsertEvent(ctx, &storage.EventRow{RoomNID: room, EventID: "$rejected", Type: "m.room.message", Sender: "@alice:x",
		Depth: 9, StreamPos: 6, Status: storage.EventRejected, JSON: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	evs, err := db.StreamEvents(ctx, 1, 6, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[0].StreamPos != 2 || evs[3].StreamPos != 5 {
		t.Fatalf("events %+v", evs)
	}
	if e := evs[1]; e.Membership != "join" || e.RoomID != "!a:x" || e.RoomVersion != "12" || *e.StateKey != "@bob:remote.example:8448" {
		t.Fatalf("member event %+v", e)
	}
	if evs[0].Membership != "" || evs[0].StateKey != nil {
		t.Fatalf("message %+v", evs[0])
	}
	if limited, _ := db.StreamEvents(ctx, 0, 6, 2); len(limited) != 2 || limited[1].StreamPos != 2 {
		t.Fatalf("limited %+v", limited)
	}

	var changes []storage.CurrentStateChange
	for i, c := range []struct{ user, membership string }{
		{"@alice:x", "join"}, {"@bob:remote.example:8448", "join"}, {"@carol:other.example", "invite"},
		{"@dave:remote.example:8448", "join"}, {"@erin:gone.example", "leave"},
	} {
		changes = append(changes, storage.CurrentStateChange{Type: "m.room.member", StateKey: c.user, EventNID: int64(100 + i), Membership: c.membership})
	}
	if err := db.UpdateCurrentState(ctx, room, changes); err != nil {
		t.Fatal(err)
	}
	servers, err := db.JoinedServers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"remote.example:8448", "x"}; !slices.Equal(servers, want) {
		t.Fatalf("joined servers %q, want %q (events %v)", servers, want, ids)
	}
}

func TestFederationQueues(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!q:x")
	ids := insertEvents(t, db, room, 1, []testEvent{{typ: "m.room.message", sender: "@a:x"}, {typ: "m.room.message", sender: "@a:x"}})
	evs, err := db.EventsByID(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(evs, func(a, b storage.EventRow) int { return int(a.StreamPos - b.StreamPos) })

	if _, ok, err := db.ConsumerPosition(ctx, "fed"); ok || err != nil {
		t.Fatalf("position before any: ok %v err %v", ok, err)
	}
	err = db.Transact(ctx, func(tx *storage.Tx) error {
		for _, e := range evs {
			if err := tx.QueuePDU(ctx, e.NID, []string{"a.example", "b.example"}); err != nil {
				return err
			}
		}
		if err := tx.QueuePDU(ctx, 99999, []string{"a.example"}); err != nil { // an event that does not exist
			return err
		}
		return tx.SetConsumerPosition(ctx, "fed", 7)
	})
	if err != nil {
		t.Fatal(err)
	}
	if pos, ok, err := db.ConsumerPosition(ctx, "fed"); pos != 7 || !ok || err != nil {
		t.Fatalf("position %d %v %v", pos, ok, err)
	}
	if err := db.SetConsumerPosition(ctx, "fed", 9); err != nil {
		t.Fatal(err)
	}
	if pos, _, _ := db.ConsumerPosition(ctx, "fed"); pos != 9 {
		t.Fatalf("position after update %d", pos)
	}

	if err := db.SetRedactedBy(ctx, evs[1].EventID, "$redaction"); err != nil {
		t.Fatal(err)
	}
	pdus, err := db.QueuedPDUs(ctx, "a.example", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pdus) != 3 || pdus[0].EventNID != evs[0].NID || pdus[1].EventNID != evs[1].NID || pdus[2].JSON != nil ||
		string(pdus[0].JSON) != string(evs[0].JSON) || pdus[0].RoomVersion != "12" || pdus[0].Redacted || !pdus[1].Redacted {
		t.Fatalf("queued for a: %+v", pdus)
	}
	if first, _ := db.QueuedPDUs(ctx, "a.example", 1); len(first) != 1 || first[0].ID != pdus[0].ID {
		t.Fatalf("limit 1: %+v", first)
	}

	// EDUs: a coalesce key replaces the unsent EDU of the same key.
	if err := db.QueueEDU(ctx, []string{"a.example", "b.example"}, "m.receipt", []byte(`{"n":1}`), "k"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueueEDU(ctx, []string{"a.example"}, "m.direct_to_device", []byte(`{"n":2}`), ""); err != nil {
		t.Fatal(err)
	}
	if err := db.QueueEDU(ctx, []string{"a.example"}, "m.receipt", []byte(`{"n":3}`), "k"); err != nil {
		t.Fatal(err)
	}
	edus, err := db.QueuedEDUs(ctx, "a.example", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(edus) != 2 || string(edus[0].Content) != `{"n":2}` || edus[1].Type != "m.receipt" || string(edus[1].Content) != `{"n":3}` {
		t.Fatalf("edus for a: %+v", edus)
	}
	if b, _ := db.QueuedEDUs(ctx, "b.example", 10); len(b) != 1 || string(b[0].Content) != `{"n":1}` {
		t.Fatalf("edus for b: %+v", b)
	}

	dests, err := db.QueuedDestinations(ctx)
	if err != nil || !slices.Equal(dests, []string{"a.example", "b.example"}) {
		t.Fatalf("destinations %q %v", dests, err)
	}
	if err := db.DeleteQueued(ctx, []int64{pdus[0].ID, pdus[1].ID, pdus[2].ID}, []int64{edus[0].ID, edus[1].ID}); err != nil {
		t.Fatal(err)
	}
	if left, _ := db.QueuedPDUs(ctx, "a.example", 10); len(left) != 0 {
		t.Fatalf("left for a: %+v", left)
	}
	if left, _ := db.QueuedPDUs(ctx, "b.example", 10); len(left) != 2 {
		t.Fatalf("left for b: %+v", left)
	}
	if dests, _ := db.QueuedDestinations(ctx); !slices.Equal(dests, []string{"b.example"}) {
		t.Fatalf("destinations after delete %q", dests)
	}

	// Backoff.
	if err := db.SetFederationBackoff(ctx, storage.DestinationBackoff{Destination: "a.example", Failures: 1, RetryAtTS: 10}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetFederationBackoff(ctx, storage.DestinationBackoff{Destination: "a.example", Failures: 2, RetryAtTS: 20}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetFederationBackoff(ctx, storage.DestinationBackoff{Destination: "c.example", Failures: 1, RetryAtTS: 5}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetFederationBackoff(ctx, storage.DestinationBackoff{Destination: "c.example"}); err != nil {
		t.Fatal(err)
	}
	bs, err := db.FederationBackoffs(ctx)
	if err != nil || len(bs) != 1 || bs[0] != (storage.DestinationBackoff{Destination: "a.example", Failures: 2, RetryAtTS: 20}) {
		t.Fatalf("backoffs %+v %v", bs, err)
	}
}

func TestPublicReceiptsInRange(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	room := createRoom(t, db, "!r:x")
	for _, r := range []storage.Receipt{
		{RoomNID: room, UserID: "@a:x", Type: storage.ReceiptRead, EventID: "$1", EventPos: 1, TS: 10, StreamPos: 5},
		{RoomNID: room, UserID: "@a:x", Type: storage.ReceiptReadPrivate, EventID: "$1", EventPos: 1, TS: 11, StreamPos: 6},
		{RoomNID: room, UserID: "@b:x", Type: storage.ReceiptRead, ThreadID: "$root", EventID: "$2", EventPos: 2, TS: 12, StreamPos: 7},
		{RoomNID: room, UserID: "@c:x", Type: storage.ReceiptRead, EventID: "$2", EventPos: 2, TS: 13, StreamPos: 9},
	} {
		putReceipt(t, db, r)
	}
	got, err := db.PublicReceiptsInRange(ctx, 4, 8, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].UserID != "@a:x" || got[1].ThreadID != "$root" || got[1].RoomID != "!r:x" || got[1].TS != 12 {
		t.Fatalf("receipts %+v", got)
	}
	if got, _ := db.PublicReceiptsInRange(ctx, 0, 100, 1); len(got) != 1 {
		t.Fatalf("limited %+v", got)
	}
}
