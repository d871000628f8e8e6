package storage_test

import (
	"reflect"
	"testing"

	"github.com/veche/veche/storage"
)

func TestServerKeys(t *testing.T) {
	t.Parallel()
	db := open(t)
	ctx := t.Context()
	if keys, err := db.ServerKeys(ctx, "b.test"); err != nil || len(keys) != 0 {
		t.Fatalf("empty table: %v, %v", keys, err)
	}
	current := storage.ServerKey{ServerName: "b.test", KeyID: "ed25519:a_AbC", PublicKey: "pub1", ValidUntilTS: 2000, FetchedTS: 10, Response: []byte(`{"r":1}`)}
	other := storage.ServerKey{ServerName: "c.test", KeyID: "ed25519:x", PublicKey: "pub2", ValidUntilTS: 5, FetchedTS: 10}
	for _, k := range []storage.ServerKey{current, other} {
		if err := db.StoreServerKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	get := func() storage.ServerKey {
		t.Helper()
		keys, err := db.ServerKeys(ctx, "b.test")
		if err != nil || len(keys) != 1 {
			t.Fatalf("ServerKeys = %v, %v", keys, err)
		}
		return keys[0]
	}
	if got := get(); !reflect.DeepEqual(got, current) {
		t.Fatalf("stored %+v, read %+v", current, got)
	}

	// Learned again without a response and with a shorter validity (a
	// notary's older answer): the response and the validity stay.
	again := current
	again.Response, again.ValidUntilTS, again.FetchedTS = nil, 1000, 20
	if err := db.StoreServerKey(ctx, again); err != nil {
		t.Fatal(err)
	}
	want := current
	want.FetchedTS = 20
	if got := get(); !reflect.DeepEqual(got, want) {
		t.Errorf("after a shorter answer: %+v, want %+v", got, want)
	}

	// The key expired: a new response says so.
	expired := current
	expired.ValidUntilTS, expired.ExpiredTS, expired.FetchedTS, expired.Response = 0, 1500, 30, []byte(`{"r":2}`)
	if err := db.StoreServerKey(ctx, expired); err != nil {
		t.Fatal(err)
	}
	want = expired
	want.ValidUntilTS = 2000
	if got := get(); !reflect.DeepEqual(got, want) {
		t.Errorf("after expiry: %+v, want %+v", got, want)
	}
}
