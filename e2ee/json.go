package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// Key objects are handled as JSON objects with raw members: their
// signatures cover the canonical form of everything but "signatures" and
// "unsigned", so nothing else may change on the way through.

type object map[string]json.RawMessage

func parseObject(raw []byte) (object, error) {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil || o == nil {
		return nil, errors.New("not a JSON object")
	}
	return o, nil
}

func (o object) marshal() []byte {
	b, _ := json.Marshal(map[string]json.RawMessage(o))
	return b
}

// signatures returns the object's signatures member.
func (o object) signatures() map[string]map[string]json.RawMessage {
	var sigs map[string]map[string]json.RawMessage
	_ = json.Unmarshal(o["signatures"], &sigs)
	if sigs == nil {
		sigs = map[string]map[string]json.RawMessage{}
	}
	return sigs
}

// signedPart is the object without signatures and unsigned: what the
// signatures cover, as a comparable value.
func signedPart(raw []byte) (any, error) {
	o, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	delete(o, "signatures")
	delete(o, "unsigned")
	var v any
	err = json.Unmarshal(o.marshal(), &v)
	return v, err
}

// sameSignedPart reports whether two key objects are the same key (their
// signatures may differ).
func sameSignedPart(a, b []byte) bool {
	va, err := signedPart(a)
	if err != nil {
		return false
	}
	vb, err := signedPart(b)
	return err == nil && reflect.DeepEqual(va, vb)
}

// withSignatures merges stored signatures into a key object.
func withSignatures(raw []byte, sigs []storage.KeySignature) []byte {
	if len(sigs) == 0 {
		return raw
	}
	o, err := parseObject(raw)
	if err != nil {
		return raw
	}
	all := o.signatures()
	for _, s := range sigs {
		if all[s.SignerUserID] == nil {
			all[s.SignerUserID] = map[string]json.RawMessage{}
		}
		v, _ := json.Marshal(s.Signature)
		all[s.SignerUserID][s.SignerKeyID] = v
	}
	o["signatures"], _ = json.Marshal(all)
	return o.marshal()
}

// withDisplayName sets unsigned.device_display_name of device keys (spec:
// added by the server; not covered by the signatures).
func withDisplayName(raw []byte, name *string) []byte {
	if name == nil {
		return raw
	}
	o, err := parseObject(raw)
	if err != nil {
		return raw
	}
	o["unsigned"], _ = json.Marshal(map[string]string{"device_display_name": *name})
	return o.marshal()
}

// withoutUnsigned drops what a client must not store in a key.
func withoutUnsigned(raw []byte) []byte {
	o, err := parseObject(raw)
	if err != nil || o["unsigned"] == nil {
		return raw
	}
	delete(o, "unsigned")
	return o.marshal()
}

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(b64 string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not an ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// verifySignature checks that the object carries a valid signature of
// signer by the ed25519 key keyID ("ed25519:<id>") whose public key is
// pub (base64).
func verifySignature(raw []byte, signer, keyID, pub string) error {
	key, err := decodeKey(pub)
	if err != nil {
		return err
	}
	return gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), key, raw)
}

// crossSigningKey is a cross-signing key object (spec: CrossSigningKey).
type crossSigningKey struct {
	UserID     string                       `json:"user_id"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// parsedCrossSigningKey is a checked cross-signing key: its one public key
// and the key ID ("ed25519:<public key>") it signs with.
type parsedCrossSigningKey struct {
	raw   []byte
	keyID string
	pub   string
}

// parseCrossSigningKey checks a cross-signing key of userID with the
// given usage: exactly one ed25519 key, named by itself.
func parseCrossSigningKey(raw []byte, userID, usage string) (parsedCrossSigningKey, error) {
	var k crossSigningKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return parsedCrossSigningKey{}, mxerr.BadJSON("Invalid " + usage + " key: " + err.Error())
	}
	if k.UserID != userID {
		return parsedCrossSigningKey{}, mxerr.InvalidParam("The " + usage + " key's user_id must be " + userID)
	}
	if !slices.Contains(k.Usage, usage) {
		return parsedCrossSigningKey{}, mxerr.InvalidParam("The " + usage + " key's usage must include " + usage)
	}
	if len(k.Keys) != 1 {
		return parsedCrossSigningKey{}, mxerr.InvalidParam("The " + usage + " key must have exactly one public key")
	}
	for id, pub := range k.Keys {
		if id != "ed25519:"+pub {
			return parsedCrossSigningKey{}, mxerr.InvalidParam("The " + usage + " key's ID must be ed25519:<public key>")
		}
		if _, err := decodeKey(pub); err != nil {
			return parsedCrossSigningKey{}, mxerr.InvalidParam("The " + usage + " key is not an ed25519 public key")
		}
		return parsedCrossSigningKey{raw: withoutUnsigned(raw), keyID: id, pub: pub}, nil
	}
	panic("unreachable")
}

// publicKeyOf returns the public key of a stored cross-signing key.
func publicKeyOf(raw []byte) string {
	var k crossSigningKey
	if json.Unmarshal(raw, &k) != nil {
		return ""
	}
	for _, pub := range k.Keys {
		return pub
	}
	return ""
}

// deviceEd25519 returns a device's ed25519 public key from its device keys.
func deviceEd25519(raw []byte, deviceID string) string {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	_ = json.Unmarshal(raw, &k)
	return k.Keys["ed25519:"+deviceID]
}

// compact trims insignificant whitespace from a client's JSON.
func compact(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
