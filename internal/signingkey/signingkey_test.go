package signingkey

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestRoundTripAndSynapseFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.key")
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = %v, %v", created, err)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate = %v, %v", created, err)
	}
	if again.ID != k.ID || !again.PrivateKey.Equal(k.PrivateKey) {
		t.Fatal("reloaded key differs")
	}
	if _, err := Create(path); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over existing file: %v", err)
	}
	// Generated versions must always parse back.
	for range 200 {
		g, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(g.Encode()); err != nil {
			t.Fatalf("generated key %s does not parse: %v", g.ID, err)
		}
	}
	// A key as Synapse writes it.
	syn, err := Parse([]byte("ed25519 a_xyzw nrPcMPLEfN63VtxtXHVEO6u8xvSn2nAJrgX7FzXkr+c\n"))
	if err != nil {
		t.Fatal(err)
	}
	if syn.ID != "ed25519:a_xyzw" {
		t.Fatalf("ID = %s", syn.ID)
	}
	for _, bad := range []string{"", "ed25519 a_x", "rsa a_x AAAA", "ed25519 a_x AAAA", "ed25519 a:x nrPcMPLEfN63VtxtXHVEO6u8xvSn2nAJrgX7FzXkr+c"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
