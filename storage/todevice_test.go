package storage_test

import (
	"encoding/json"
	"testing"

	"github.com/veche/veche/storage"
)

// inbox lists all of a device's messages.
func inbox(t *testing.T, db *storage.DB, localpart, deviceID string) []storage.ToDeviceRow {
	t.Helper()
	rows, err := db.ToDeviceInbox(t.Context(), localpart, deviceID, 1<<62, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func contents(rows []storage.ToDeviceRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, string(r.Content))
	}
	return out
}

func TestToDeviceDelivery(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	createUser(t, db, "bob")
	addDevice(t, db, "bob", "B1")
	addDevice(t, db, "bob", "B2")
	addDevice(t, db, "bob", "B3")
	addDevice(t, db, "alice", "A1")

	n, err := db.PutToDevice(ctx, "@alice:x", "m.test", storage.ToDeviceMessages{
		"bob":    {"*": json.RawMessage(`{"n":"all"}`), "B2": json.RawMessage(`{"n":"own"}`), "GONE": json.RawMessage(`{"n":"x"}`)},
		"alice":  {"A1": json.RawMessage(`{"n":"self"}`)},
		"nobody": {"*": json.RawMessage(`{"n":"x"}`)},
	}, 5)
	if err != nil || n != 4 {
		t.Fatalf("PutToDevice = %d, %v; want 4 messages (3 of bob's devices, alice's)", n, err)
	}
	if _, err := db.PutToDevice(ctx, "@alice:x", "m.test", storage.ToDeviceMessages{"bob": {"B1": json.RawMessage(`{"n":"second"}`)}}, 7); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		localpart, device string
		want              []string
	}{
		{"bob", "B1", []string{`{"n":"all"}`, `{"n":"second"}`}},
		{"bob", "B2", []string{`{"n":"own"}`}}, // named on its own: not twice
		{"bob", "B3", []string{`{"n":"all"}`}},
		{"alice", "A1", []string{`{"n":"self"}`}},
		{"bob", "GONE", nil},
	}
	for _, tt := range tests {
		got := contents(inbox(t, db, tt.localpart, tt.device))
		if len(got) != len(tt.want) {
			t.Fatalf("%s/%s inbox = %v, want %v", tt.localpart, tt.device, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("%s/%s inbox = %v, want %v", tt.localpart, tt.device, got, tt.want)
			}
		}
	}
	if rows := inbox(t, db, "bob", "B1"); rows[0].Sender != "@alice:x" || rows[0].Type != "m.test" || rows[0].StreamPos != 5 || rows[0].SentPos != 0 {
		t.Fatalf("row = %+v", rows[0])
	}
	// upTo hides messages above the reader's position.
	if rows, _ := db.ToDeviceInbox(ctx, "bob", "B1", 6, 10); len(rows) != 1 {
		t.Fatalf("inbox up to 6 = %v, want the message at 5 only", contents(rows))
	}

	// Sent once, a message keeps its first response's position; an
	// acknowledgment at or past it deletes it, and raises the position
	// the stream restarts above.
	rows := inbox(t, db, "bob", "B1")
	if err := db.MarkToDeviceSent(ctx, []int64{rows[0].ID}, 6); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkToDeviceSent(ctx, []int64{rows[0].ID, rows[1].ID}, 9); err != nil {
		t.Fatal(err)
	}
	rows = inbox(t, db, "bob", "B1")
	if rows[0].SentPos != 6 || rows[1].SentPos != 9 {
		t.Fatalf("sent positions = %d, %d; want 6, 9", rows[0].SentPos, rows[1].SentPos)
	}
	if err := db.AckToDevice(ctx, "bob", "B1", 5); err != nil {
		t.Fatal(err)
	}
	if len(inbox(t, db, "bob", "B1")) != 2 {
		t.Fatal("an acknowledgment below the sent position deleted messages")
	}
	if err := db.AckToDevice(ctx, "bob", "B1", 8); err != nil {
		t.Fatal(err)
	}
	if got := contents(inbox(t, db, "bob", "B1")); len(got) != 1 || got[0] != `{"n":"second"}` {
		t.Fatalf("after acknowledging up to 8: %v", got)
	}
	if err := db.AckToDevice(ctx, "bob", "B1", 9); err != nil {
		t.Fatal(err)
	}
	if got := inbox(t, db, "bob", "B1"); len(got) != 0 {
		t.Fatalf("after acknowledging everything: %v", contents(got))
	}
	// Position 7 is gone from the inbox but still counts.
	if err := db.Transact(ctx, func(tx *storage.Tx) error {
		_, err := tx.PutToDevice(ctx, "@a:x", "t", storage.ToDeviceMessages{"bob": {"B2": json.RawMessage(`{}`)}}, 3)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if max, err := db.MaxToDeviceStreamPos(ctx); err != nil || max != 7 {
		t.Fatalf("MaxToDeviceStreamPos = %d, %v; want 7", max, err)
	}
	if err := db.RaiseToDevicePos(ctx, 12); err != nil {
		t.Fatal(err)
	}
	if max, err := db.MaxStreamPos(ctx); err != nil || max != 12 {
		t.Fatalf("MaxStreamPos = %d, %v; want 12", max, err)
	}

	// Deleting a device deletes its inbox.
	if err := db.DeleteDevices(ctx, "bob", []string{"B3"}); err != nil {
		t.Fatal(err)
	}
	addDevice(t, db, "bob", "B3")
	if got := inbox(t, db, "bob", "B3"); len(got) != 0 {
		t.Fatalf("a deleted and re-created device inherited messages: %v", contents(got))
	}
}

func TestToDeviceTransactions(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	addDevice(t, db, "alice", "A1")

	id, done, err := db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.test", "t1", "first", 100)
	if err != nil || id != "first" || done {
		t.Fatalf("new claim = %q, %v, %v", id, done, err)
	}
	id, done, err = db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.test", "t1", "second", 101)
	if err != nil || id != "first" || done {
		t.Fatalf("claim of a started transaction = %q, %v, %v; want its first message ID", id, done, err)
	}
	// The same ID on another endpoint path is another transaction.
	if id, _, _ := db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.other", "t1", "third", 101); id != "third" {
		t.Fatalf("another event type shares the transaction: %q", id)
	}
	for i, want := range []bool{true, false} {
		ok, err := db.FinishToDeviceTxn(ctx, "alice", "A1", "m.test", "t1")
		if err != nil || ok != want {
			t.Fatalf("finish #%d = %v, %v; want %v", i+1, ok, err, want)
		}
	}
	if _, done, _ := db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.test", "t1", "x", 102); !done {
		t.Fatal("a finished transaction is not reported done")
	}
	if err := db.PruneToDeviceTxns(ctx, 101); err != nil {
		t.Fatal(err)
	}
	if id, done, _ := db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.test", "t1", "fresh", 200); id != "fresh" || done {
		t.Fatalf("a pruned transaction is still known: %q %v", id, done)
	}
	// A device's transactions go with it.
	if err := db.DeleteDevices(ctx, "alice", []string{"A1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.ClaimToDeviceTxn(ctx, "alice", "A1", "m.test", "t2", "y", 300); err == nil {
		t.Fatal("a transaction was claimed for a deleted device")
	}

	// Inbound message IDs: once per origin.
	for _, c := range []struct {
		origin, id string
		want       bool
	}{{"a.test", "m1", true}, {"a.test", "m1", false}, {"c.test", "m1", true}, {"a.test", "m2", true}} {
		if got, err := db.ClaimInboundToDevice(ctx, c.origin, c.id, 10); err != nil || got != c.want {
			t.Fatalf("ClaimInboundToDevice(%s, %s) = %v, %v; want %v", c.origin, c.id, got, err, c.want)
		}
	}
	if err := db.PruneInboundToDevice(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.ClaimInboundToDevice(ctx, "a.test", "m1", 20); !got {
		t.Fatal("a pruned message ID is still known")
	}
}
