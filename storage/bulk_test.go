package storage_test

import (
	"fmt"
	"testing"

	"github.com/veche/veche/storage"
)

// Bulk paths (more than a handful of rows, and more than one batch) must
// store exactly what the row-by-row paths store, on both backends.
func TestBulkWrites(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	roomNID, err := db.CreateRoom(ctx, "!bulk:test", "11", 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500 // three batches
	rows := make([]storage.EventRow, n)
	for i := range rows {
		sk := fmt.Sprintf("@u%d:test", i)
		rows[i] = storage.EventRow{RoomNID: roomNID, EventID: fmt.Sprintf("$e%d", i), Type: "m.room.member", StateKey: &sk,
			Sender: sk, Depth: int64(i), OriginServerTS: int64(1000 + i), Status: storage.EventOutlier,
			JSON: []byte(fmt.Sprintf(`{"content":{"membership":"join","note":"quote \" and \\ and ünïcode %d"}}`, i))}
	}
	rows[7].Status, rows[7].RejectionReason = storage.EventRejected, "not allowed"
	rows[9].StateKey = nil
	var nids map[string]int64
	err = db.Transact(ctx, func(tx *storage.Tx) error {
		nids, err = tx.InsertOutliers(ctx, roomNID, rows)
		return err
	})
	if err != nil || len(nids) != n {
		t.Fatalf("inserted %d of %d: %v", len(nids), n, err)
	}
	// Stored events are skipped the second time.
	err = db.Transact(ctx, func(tx *storage.Tx) error {
		again, err := tx.InsertOutliers(ctx, roomNID, rows[:10])
		if len(again) != 0 {
			t.Errorf("re-inserted %d stored events", len(again))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 7, 9, n - 1} {
		got, err := db.EventByID(ctx, rows[i].EventID)
		if err != nil {
			t.Fatal(err)
		}
		if got.NID != nids[rows[i].EventID] || string(got.JSON) != string(rows[i].JSON) || got.Status != rows[i].Status ||
			got.RejectionReason != rows[i].RejectionReason || got.Depth != rows[i].Depth || got.StreamPos != 0 ||
			(got.StateKey == nil) != (rows[i].StateKey == nil) {
			t.Fatalf("row %d stored as %+v", i, got)
		}
	}

	entries := make([]storage.StateEntry, n)
	changes := make([]storage.CurrentStateChange, n)
	for i := range entries {
		nid := nids[rows[i].EventID]
		entries[i] = storage.StateEntry{Type: "m.room.member", StateKey: fmt.Sprintf("@u%d:test", i), EventNID: nid}
		changes[i] = storage.CurrentStateChange{Type: "m.room.member", StateKey: entries[i].StateKey, EventNID: nid, Membership: "join"}
	}
	var snap int64
	err = db.Transact(ctx, func(tx *storage.Tx) error {
		if snap, err = tx.InsertSnapshot(ctx, roomNID, 0, 1, n, entries); err != nil {
			return err
		}
		return tx.UpdateCurrentState(ctx, roomNID, changes)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Snapshot(ctx, snap)
	if err != nil || len(got) != n || got[[2]string{"m.room.member", "@u42:test"}] != nids["$e42"] {
		t.Fatalf("snapshot has %d entries, %v", len(got), err)
	}
	cur, err := db.CurrentStateNIDs(ctx, roomNID)
	if err != nil || len(cur) != n {
		t.Fatalf("current state has %d entries, %v", len(cur), err)
	}
	// Upserts replace, deletes remove.
	changes = changes[:20]
	for i := range changes {
		changes[i].EventNID = nids[rows[n-1-i].EventID]
	}
	changes[0].EventNID = 0
	if err := db.Transact(ctx, func(tx *storage.Tx) error { return tx.UpdateCurrentState(ctx, roomNID, changes) }); err != nil {
		t.Fatal(err)
	}
	if m, _, err := db.CurrentMembership(ctx, roomNID, "@u0:test"); err != nil || m != "" {
		t.Fatalf("deleted entry: %q %v", m, err)
	}
	if cur, _ := db.CurrentStateNIDs(ctx, roomNID); len(cur) != n-1 {
		t.Fatalf("current state has %d entries after one delete", len(cur))
	}
}
