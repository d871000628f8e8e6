package storage_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/veche/veche/storage"
)

func TestOneTimeKeysAndFallback(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	addDevice(t, db, "alice", "DEV")
	otk := func(id, js string) storage.OneTimeKey {
		return storage.OneTimeKey{Algorithm: "signed_curve25519", KeyID: id, JSON: []byte(js)}
	}
	if err := db.PutOneTimeKeys(ctx, "alice", "DEV", []storage.OneTimeKey{otk("B", `{"key":"b"}`), otk("A", `{"key":"a"}`)}); err != nil {
		t.Fatal(err)
	}
	// The same key again (formatted differently) is a retry; other content
	// under a taken ID is not.
	if err := db.PutOneTimeKeys(ctx, "alice", "DEV", []storage.OneTimeKey{otk("A", `{ "key": "a" }`)}); err != nil {
		t.Fatalf("re-upload: %v", err)
	}
	if err := db.PutOneTimeKeys(ctx, "alice", "DEV", []storage.OneTimeKey{otk("A", `{"key":"other"}`)}); !errors.Is(err, storage.ErrKeyExists) {
		t.Fatalf("conflicting upload: %v", err)
	}
	if err := db.PutFallbackKey(ctx, "alice", "DEV", otk("F", `{"key":"f","fallback":true}`)); err != nil {
		t.Fatal(err)
	}
	counts, err := db.OneTimeKeyCounts(ctx, "alice", "DEV")
	if err != nil || counts["signed_curve25519"] != 2 {
		t.Fatalf("counts = %v, %v", counts, err)
	}

	unused := func() []string {
		t.Helper()
		types, err := db.UnusedFallbackKeyTypes(ctx, "alice", "DEV")
		if err != nil {
			t.Fatal(err)
		}
		return types
	}
	tests := []struct {
		wantID string
		ok     bool
		unused int
	}{
		{"A", true, 1}, // one-time keys first, in key ID order
		{"B", true, 1},
		{"F", true, 0}, // then the fallback key, which becomes used
		{"F", true, 0}, // and stays
	}
	for i, tc := range tests {
		k, ok, err := db.ClaimOneTimeKey(ctx, "alice", "DEV", "signed_curve25519")
		if err != nil || ok != tc.ok || k.KeyID != tc.wantID {
			t.Fatalf("claim %d = %+v %v %v, want %s", i, k, ok, err, tc.wantID)
		}
		if n := len(unused()); n != tc.unused {
			t.Fatalf("claim %d: %d unused fallback keys, want %d", i, n, tc.unused)
		}
	}
	if _, ok, err := db.ClaimOneTimeKey(ctx, "alice", "DEV", "curve25519"); ok || err != nil {
		t.Fatalf("claim of an algorithm without keys: %v %v", ok, err)
	}
	// Uploading the used fallback key again keeps it used; a new one is not.
	if err := db.PutFallbackKey(ctx, "alice", "DEV", otk("F", `{"key":"f","fallback":true}`)); err != nil {
		t.Fatal(err)
	}
	if len(unused()) != 0 {
		t.Fatal("re-uploading the same fallback key reset it")
	}
	if err := db.PutFallbackKey(ctx, "alice", "DEV", otk("G", `{"key":"g","fallback":true}`)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(unused(), []string{"signed_curve25519"}) {
		t.Fatal("a new fallback key is not unused")
	}

	// Keys go with their device.
	if _, err := db.PutDeviceKeys(ctx, "alice", "DEV", []byte(`{"device_id":"DEV"}`)); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteDevices(ctx, "alice", []string{"DEV"}); err != nil {
		t.Fatal(err)
	}
	if keys, err := db.DeviceKeysOf(ctx, "alice", nil); err != nil || len(keys) != 0 {
		t.Fatalf("device keys after deletion: %v %v", keys, err)
	}
	if n := len(unused()); n != 0 {
		t.Fatal("fallback key outlived its device")
	}
	if counts, _ := db.OneTimeKeyCounts(ctx, "alice", "DEV"); len(counts) != 0 {
		t.Fatalf("one-time keys outlived their device: %v", counts)
	}
}

func TestDeviceKeysAndSignatures(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	createUser(t, db, "alice")
	addDevice(t, db, "alice", "A1")
	addDevice(t, db, "alice", "A2")
	changed, err := db.PutDeviceKeys(ctx, "alice", "A1", []byte(`{"k":1}`))
	if err != nil || !changed {
		t.Fatalf("first put: %v %v", changed, err)
	}
	if changed, _ := db.PutDeviceKeys(ctx, "alice", "A1", []byte(`{"k":1}`)); changed {
		t.Fatal("the same keys count as a change")
	}
	all, err := db.DevicesAndKeys(ctx, "alice")
	if err != nil || len(all) != 2 || all[0].KeyJSON == nil || all[1].KeyJSON != nil {
		t.Fatalf("devices and keys: %+v %v", all, err)
	}
	withKeys, err := db.DeviceKeysOf(ctx, "alice", []string{"A1", "A2"})
	if err != nil || len(withKeys) != 1 || withKeys[0].DeviceID != "A1" {
		t.Fatalf("keys of listed devices: %+v %v", withKeys, err)
	}

	sigs := []storage.KeySignature{
		{TargetUserID: "@alice:x", TargetKeyID: "A1", SignerUserID: "@alice:x", SignerKeyID: "ed25519:ss", Signature: "own"},
		{TargetUserID: "@alice:x", TargetKeyID: "MASTER", SignerUserID: "@bob:y", SignerKeyID: "ed25519:us", Signature: "bob's"},
	}
	for _, s := range sigs {
		if err := db.PutKeySignature(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		viewer string
		want   int
	}{
		{"", 1},         // another server: the user's own signatures
		{"@alice:x", 1}, // the user: the same
		{"@bob:y", 2},   // the signer: theirs too
		{"@carol:x", 1}, // anyone else: the user's own
	}
	for _, tc := range tests {
		got, err := db.KeySignatures(ctx, "@alice:x", []string{"A1", "MASTER"}, tc.viewer)
		if err != nil || len(got) != tc.want {
			t.Errorf("viewer %q: %d signatures (%v), want %d", tc.viewer, len(got), err, tc.want)
		}
	}
	if err := db.DeleteKeySignatures(ctx, "@alice:x", []string{"A1"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.KeySignatures(ctx, "@alice:x", []string{"A1", "MASTER"}, "@bob:y"); len(got) != 1 {
		t.Fatalf("after deleting A1's: %v", got)
	}
}

func TestDeviceListChanges(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	const alice, bob, carol = "@alice:x", "@bob:y", "@carol:x"
	room := createRoom(t, db, "!r:x")
	other := createRoom(t, db, "!o:x")
	member := func(nid int64, user, membership string) {
		t.Helper()
		if err := db.UpdateCurrentState(ctx, nid, []storage.CurrentStateChange{{Type: "m.room.member", StateKey: user, EventNID: 1, Membership: membership}}); err != nil {
			t.Fatal(err)
		}
	}
	member(room, alice, "join")
	member(room, bob, "join")
	member(other, carol, "join")
	for user, pos := range map[string]int64{alice: 5, bob: 6, carol: 7} {
		if _, err := db.SetDeviceListPos(ctx, user, pos); err != nil {
			t.Fatal(err)
		}
	}
	prev, err := db.SetDeviceListPos(ctx, bob, 9)
	if err != nil || prev != 6 {
		t.Fatalf("previous position = %d, %v", prev, err)
	}
	tests := []struct {
		after, upTo int64
		want        []string
	}{
		{0, 10, []string{alice, bob}}, // carol shares no room
		{5, 10, []string{bob}},
		{0, 8, []string{alice}}, // bob's change moved to 9
		{9, 10, nil},
	}
	for _, tc := range tests {
		got, err := db.DeviceListChangedUsers(ctx, alice, tc.after, tc.upTo)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("(%d, %d]: %v %v, want %v", tc.after, tc.upTo, got, err, tc.want)
		}
	}
	sharing, err := db.UsersSharingRooms(ctx, bob)
	if err != nil || !slices.Equal(sharing, []string{alice, bob}) {
		t.Fatalf("users sharing rooms with bob: %v %v", sharing, err)
	}
	if pos, err := db.MaxStreamPos(ctx); err != nil || pos < 9 {
		t.Fatalf("MaxStreamPos = %d, %v: device list positions must count", pos, err)
	}
}
