// Package testkeys makes end-to-end encryption keys for tests without any
// encryption library: ed25519 key pairs, device keys, one-time and
// fallback keys and cross-signing keys, signed the way clients sign them
// (canonical JSON, gomatrixserverlib.SignJSON). The curve25519 "keys" are
// random bytes: servers never look inside them.
package testkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
)

// KeyPair is an ed25519 key pair.
type KeyPair struct {
	Pub  ed25519.PublicKey
	Priv ed25519.PrivateKey
}

// NewKeyPair makes a random key pair.
func NewKeyPair() KeyPair {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return KeyPair{Pub: pub, Priv: priv}
}

// PubB64 is the public key in unpadded base64, as Matrix writes keys.
func (k KeyPair) PubB64() string { return base64.RawStdEncoding.EncodeToString(k.Pub) }

// Sign adds userID's signature by the key named keyID to obj.
func Sign(obj map[string]any, userID, keyID string, priv ed25519.PrivateKey) map[string]any {
	raw, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		panic(err)
	}
	return out
}

// Verify checks userID's signature by keyID on obj.
func Verify(obj any, userID, keyID string, pub ed25519.PublicKey) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(keyID), pub, raw)
}

// Device is a client device's identity.
type Device struct {
	UserID, DeviceID string
	Ed25519          KeyPair
	curve            string
}

// NewDevice makes a device identity.
func NewDevice(userID, deviceID string) *Device {
	return &Device{UserID: userID, DeviceID: deviceID, Ed25519: NewKeyPair(), curve: randomKey()}
}

// KeyID is the device's signing key ID, "ed25519:<device ID>".
func (d *Device) KeyID() string { return "ed25519:" + d.DeviceID }

// DeviceKeys are the device's self-signed identity keys.
func (d *Device) DeviceKeys() map[string]any {
	return Sign(map[string]any{
		"user_id": d.UserID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + d.DeviceID: d.curve, d.KeyID(): d.Ed25519.PubB64()},
	}, d.UserID, d.KeyID(), d.Ed25519.Priv)
}

// OneTimeKeys makes n signed_curve25519 keys with IDs prefix0…prefix(n-1).
func (d *Device) OneTimeKeys(prefix string, n int) map[string]any {
	out := map[string]any{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%d", prefix, i)] = d.signedKey(false)
	}
	return out
}

// FallbackKey makes a signed fallback key with the given ID.
func (d *Device) FallbackKey(id string) map[string]any {
	return map[string]any{"signed_curve25519:" + id: d.signedKey(true)}
}

func (d *Device) signedKey(fallback bool) map[string]any {
	k := map[string]any{"key": randomKey()}
	if fallback {
		k["fallback"] = true
	}
	return Sign(k, d.UserID, d.KeyID(), d.Ed25519.Priv)
}

// CrossSigning is a user's set of cross-signing keys.
type CrossSigning struct {
	UserID                           string
	Master, SelfSigning, UserSigning KeyPair
}

// NewCrossSigning makes cross-signing keys for a user.
func NewCrossSigning(userID string) *CrossSigning {
	return &CrossSigning{UserID: userID, Master: NewKeyPair(), SelfSigning: NewKeyPair(), UserSigning: NewKeyPair()}
}

// KeyID is "ed25519:<public key>", how a cross-signing key is named.
func KeyID(k KeyPair) string { return "ed25519:" + k.PubB64() }

func (c *CrossSigning) key(k KeyPair, usage string) map[string]any {
	return map[string]any{"user_id": c.UserID, "usage": []string{usage}, "keys": map[string]string{KeyID(k): k.PubB64()}}
}

// MasterKey is the master key object.
func (c *CrossSigning) MasterKey() map[string]any { return c.key(c.Master, "master") }

// SelfSigningKey is the self-signing key, signed by the master key.
func (c *CrossSigning) SelfSigningKey() map[string]any {
	return Sign(c.key(c.SelfSigning, "self_signing"), c.UserID, KeyID(c.Master), c.Master.Priv)
}

// UserSigningKey is the user-signing key, signed by the master key.
func (c *CrossSigning) UserSigningKey() map[string]any {
	return Sign(c.key(c.UserSigning, "user_signing"), c.UserID, KeyID(c.Master), c.Master.Priv)
}

// Upload is the body of /keys/device_signing/upload with all three keys.
func (c *CrossSigning) Upload() map[string]any {
	return map[string]any{"master_key": c.MasterKey(), "self_signing_key": c.SelfSigningKey(), "user_signing_key": c.UserSigningKey()}
}

// SignDevice signs a device's keys with the self-signing key.
func (c *CrossSigning) SignDevice(deviceKeys map[string]any) map[string]any {
	return Sign(deviceKeys, c.UserID, KeyID(c.SelfSigning), c.SelfSigning.Priv)
}

// SignUser signs another user's master key with the user-signing key.
func (c *CrossSigning) SignUser(master map[string]any) map[string]any {
	return Sign(master, c.UserID, KeyID(c.UserSigning), c.UserSigning.Priv)
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}
