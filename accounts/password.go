package accounts

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/veche/veche/config"
)

// errBadHash means a stored hash could not be parsed.
var errBadHash = errors.New("accounts: unrecognised password hash")

// Hasher hashes new passwords with argon2id and verifies both argon2id and
// bcrypt hashes, so that accounts imported from Synapse keep working.
type Hasher struct {
	params config.Argon2
	// slots bounds concurrent argon2 computations: each holds memory_kib of
	// RAM, and running more than there are cores gains no throughput, so a
	// burst of logins queues instead of multiplying the server's memory.
	slots chan struct{}
}

// NewHasher returns a hasher using the configured argon2id cost.
func NewHasher(p config.Argon2) *Hasher {
	return &Hasher{params: p, slots: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// idKey is argon2.IDKey within a slot.
func (h *Hasher) idKey(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	h.slots <- struct{}{}
	defer func() { <-h.slots }()
	return argon2.IDKey(password, salt, time, memory, threads, keyLen)
}

// Hash returns a PHC-format argon2id hash of password.
func (h *Hasher) Hash(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := h.params
	key := h.idKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify reports whether password matches hash.
func (h *Hasher) Verify(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		return h.verifyArgon2id(hash, password)
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) || errors.Is(err, bcrypt.ErrPasswordTooLong) {
			return false, nil
		}
		return err == nil, err
	default:
		return false, errBadHash
	}
}

// Burn spends the time of one verification; used when the account does not
// exist so that timing does not reveal which accounts do.
func (h *Hasher) Burn(password string) {
	p := h.params
	h.idKey([]byte(password), make([]byte, 16), p.Iterations, p.MemoryKiB, p.Parallelism, 32)
}

func (h *Hasher) verifyArgon2id(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, key
	if len(parts) != 6 {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var mem, iters uint32
	var par uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iters, &par); err != nil || iters == 0 || par == 0 {
		return false, errBadHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errBadHash
	}
	got := h.idKey([]byte(password), salt, iters, mem, par, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
