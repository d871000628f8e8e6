package storage_test

import (
	"errors"
	"testing"

	"github.com/veche/veche/storage"
)

func TestOpenIDTokens(t *testing.T) {
	db := open(t)
	ctx := t.Context()
	if err := db.PutOpenIDToken(ctx, "tok-a", "@alice:test", 2000, 1000); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		now         int64
		want        string
	}{
		{"valid", "tok-a", 1999, "@alice:test"},
		{"expired", "tok-a", 2000, ""},
		{"unknown", "tok-b", 1000, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.OpenIDTokenOwner(ctx, tc.token, tc.now)
			if tc.want == "" {
				if !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("got %q, %v; want ErrNotFound", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// Issuing a token sweeps the expired ones.
	if err := db.PutOpenIDToken(ctx, "tok-c", "@bob:test", 5000, 3000); err != nil {
		t.Fatal(err)
	}
	if _, err := db.OpenIDTokenOwner(ctx, "tok-a", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired token kept: %v", err)
	}
	if got, err := db.OpenIDTokenOwner(ctx, "tok-c", 3000); err != nil || got != "@bob:test" {
		t.Fatalf("tok-c: %q, %v", got, err)
	}
}
