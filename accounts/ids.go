package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// ErrInvalidLocalpart is wrapped by every localpart grammar violation.
var ErrInvalidLocalpart = errors.New("invalid localpart")

// maxUserIDLength is the spec's limit on a full user ID, in bytes.
const maxUserIDLength = 255

// ValidateLocalpart checks a localpart for a new account on serverName
// against the spec's user ID grammar: a-z, 0-9, and ._=-/+ only, and the
// whole ID at most 255 bytes.
func ValidateLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return fmt.Errorf("%w: must not be empty", ErrInvalidLocalpart)
	}
	for _, r := range localpart {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '=' || r == '-' || r == '/' || r == '+'
		if !ok {
			return fmt.Errorf("%w: user IDs may only contain a-z, 0-9, and the characters . _ = - / +", ErrInvalidLocalpart)
		}
	}
	if len("@"+localpart+":"+serverName) > maxUserIDLength {
		return fmt.Errorf("%w: user ID would be longer than %d bytes", ErrInvalidLocalpart, maxUserIDLength)
	}
	return nil
}

// tokenPrefix marks Veche tokens so that leaked ones are recognisable by
// secret scanners.
const (
	accessTokenPrefix  = "vat_"
	refreshTokenPrefix = "vrt_"
)

// newToken returns a random token and the hash that is stored for it.
func newToken(prefix string) (token string, hash []byte) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

const deviceIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// newDeviceID returns ten random upper-case letters, as Synapse does.
func newDeviceID() string {
	return randomString(deviceIDAlphabet, 10)
}

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		// 256 % 26 bias is irrelevant for identifiers.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// NewSecret returns a random URL-safe secret (UIA sessions, nonces).
func NewSecret() string {
	return randomString("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 24)
}
