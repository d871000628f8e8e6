package accounts_test

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/config"
)

// tinyArgon2 keeps hashing fast; security does not matter in tests.
var tinyArgon2 = config.Argon2{MemoryKiB: 64, Iterations: 1, Parallelism: 1}

func TestHasherArgon2id(t *testing.T) {
	t.Parallel()
	h := accounts.NewHasher(tinyArgon2)
	hash, err := h.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=64,t=1,p=1$"; !strings.HasPrefix(hash, want) {
		t.Errorf("hash %q does not start with %q", hash, want)
	}
	if ok, err := h.Verify(hash, "correct horse"); err != nil || !ok {
		t.Errorf("Verify(right password) = %v, %v", ok, err)
	}
	for _, wrong := range []string{"", "correct horse ", "Correct horse", "correct hors"} {
		if ok, err := h.Verify(hash, wrong); err != nil || ok {
			t.Errorf("Verify(%q) = %v, %v; want false, nil", wrong, ok, err)
		}
	}
	again, _ := h.Hash("correct horse")
	if again == hash {
		t.Error("two hashes of one password are identical: salt not random")
	}

	// Hashes made before a cost change must keep verifying: the parameters
	// are read from the hash, not from the configuration.
	old := accounts.NewHasher(config.Argon2{MemoryKiB: 128, Iterations: 2, Parallelism: 2})
	oldHash, err := old.Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Verify(oldHash, "pw"); err != nil || !ok {
		t.Errorf("Verify of a hash with other parameters = %v, %v", ok, err)
	}
	h.Burn("anything") // must not panic
}

func TestHasherBcrypt(t *testing.T) {
	t.Parallel()
	h := accounts.NewHasher(tinyArgon2)
	b, err := bcrypt.GenerateFromPassword([]byte("synapse password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash := string(b)
	// Synapse writes $2b$; other tools write $2a$ or $2y$ for the same format.
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		variant := prefix + hash[4:]
		if ok, err := h.Verify(variant, "synapse password"); err != nil || !ok {
			t.Errorf("%s: Verify(right password) = %v, %v", prefix, ok, err)
		}
		if ok, err := h.Verify(variant, "wrong"); err != nil || ok {
			t.Errorf("%s: Verify(wrong password) = %v, %v; want false, nil", prefix, ok, err)
		}
	}

	// Python's bcrypt used to cut passwords at 72 bytes without a word, so
	// Synapse users with longer passwords hold a hash of the first 72.
	long := strings.Repeat("0123456789", 8)
	b, err = bcrypt.GenerateFromPassword([]byte(long[:72]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Verify(string(b), long); err != nil || !ok {
		t.Errorf("Verify(80-byte password against a hash of its first 72) = %v, %v", ok, err)
	}
}

func TestHasherGarbage(t *testing.T) {
	t.Parallel()
	h := accounts.NewHasher(tinyArgon2)
	good, _ := h.Hash("pw")
	parts := strings.Split(good, "$")
	tests := map[string]string{
		"empty":             "",
		"plain text":        "pw",
		"unknown scheme":    "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5",
		"truncated argon2":  "$argon2id$",
		"wrong version":     strings.Replace(good, "v=19", "v=16", 1),
		"zero iterations":   strings.Replace(good, "t=1", "t=0", 1),
		"zero parallelism":  strings.Replace(good, "p=1", "p=0", 1),
		"bad params":        strings.Replace(good, parts[3], "m=x", 1),
		"bad salt":          strings.Replace(good, parts[4], "!!!", 1),
		"bad key":           strings.Replace(good, parts[5], "!!!", 1),
		"empty key":         strings.TrimSuffix(good, parts[5]),
		"extra field":       good + "$x",
		"truncated bcrypt":  "$2b$04$abc",
		"bcrypt bad cost":   "$2b$xx$" + strings.Repeat("a", 53),
		"argon2 no dollars": "argon2id",
	}
	for name, hash := range tests {
		ok, err := h.Verify(hash, "pw")
		if err == nil || ok {
			t.Errorf("%s: Verify(%q) = %v, %v; want an error", name, hash, ok, err)
		}
	}
}
