// Package signingkey reads and writes the server's ed25519 signing key in
// Synapse's file format ("ed25519 <version> <unpadded base64 seed>"), so that
// keys move between Veche and Synapse deployments unchanged.
package signingkey

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Key is a signing key with its key ID ("ed25519:abcd").
type Key struct {
	ID         gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
}

// Public returns the public half.
func (k Key) Public() ed25519.PublicKey { return k.PrivateKey.Public().(ed25519.PublicKey) }

// Generate makes a new key with a random four-character version.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, err
	}
	// Key versions are [a-zA-Z0-9_] (spec: key IDs); base64 would also
	// produce '-' and '/'.
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	v := make([]byte, 4)
	if _, err := rand.Read(v); err != nil {
		return Key{}, err
	}
	for i := range v {
		v[i] = alphabet[int(v[i])%len(alphabet)]
	}
	version := "a_" + string(v)
	return Key{ID: gomatrixserverlib.KeyID("ed25519:" + version), PrivateKey: priv}, nil
}

// Encode renders the key in Synapse's format.
func (k Key) Encode() []byte {
	version := strings.TrimPrefix(string(k.ID), "ed25519:")
	return []byte(fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed())))
}

// Parse reads the first key of a key file. Later lines (older keys) are
// ignored here.
func Parse(data []byte) (Key, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] != "ed25519" {
			return Key{}, errors.New("signing key: expected \"ed25519 <version> <base64 seed>\"")
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return Key{}, errors.New("signing key: the seed is not 32 bytes of base64")
		}
		for _, r := range fields[1] {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
				return Key{}, fmt.Errorf("signing key: invalid key version %q", fields[1])
			}
		}
		return Key{ID: gomatrixserverlib.KeyID("ed25519:" + fields[1]), PrivateKey: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return Key{}, errors.New("signing key: the file holds no key")
}

// Load reads the key file at path.
func Load(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, err
	}
	k, err := Parse(data)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ErrExists is returned by Create when a key file is already there.
var ErrExists = errors.New("signing key file already exists")

// Create generates a key and writes it to path (mode 0600), refusing to
// overwrite an existing file.
func Create(path string) (Key, error) {
	k, err := Generate()
	if err != nil {
		return Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return Key{}, fmt.Errorf("%s: %w", path, ErrExists)
	}
	if err != nil {
		return Key{}, err
	}
	if _, err := f.Write(k.Encode()); err != nil {
		f.Close()
		return Key{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return Key{}, err
	}
	return k, f.Close()
}

// Replace writes k to path (mode 0600) in place of whatever key is there,
// atomically: readers see the old file or the new one, never half of it.
func Replace(path string, k Key) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(k.Encode()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadOrCreate loads the key at path, creating it first if it is missing.
// created reports whether it did.
func LoadOrCreate(path string) (k Key, created bool, err error) {
	k, err = Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err = Create(path)
		return k, err == nil, err
	}
	return k, false, err
}
