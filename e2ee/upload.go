package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// UploadRequest is the body of POST /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceKeysBody is what device keys must carry (spec: DeviceKeys).
type deviceKeysBody struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// Upload stores the keys a device publishes and returns its counts of
// unclaimed one-time keys by algorithm.
func (s *Service) Upload(ctx context.Context, user spec.UserID, deviceID string, req UploadRequest) (map[string]int, error) {
	userID := user.String()
	var deviceKeys []byte
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var err error
		if deviceKeys, err = checkDeviceKeys(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	otks, err := parseKeyMap(req.OneTimeKeys, "one_time_keys")
	if err != nil {
		return nil, err
	}
	fallbacks, err := parseKeyMap(req.FallbackKeys, "fallback_keys")
	if err != nil {
		return nil, err
	}
	localpart := user.Local()
	changed := false
	err = s.db.Transact(ctx, func(tx *storage.Tx) error {
		if deviceKeys != nil {
			if changed, err = tx.PutDeviceKeys(ctx, localpart, deviceID, deviceKeys); err != nil {
				return err
			}
			if changed {
				// Signatures of keys this device no longer has would not
				// verify.
				if err := tx.DeleteKeySignatures(ctx, userID, []string{deviceID}); err != nil {
					return err
				}
			}
		}
		if err := tx.PutOneTimeKeys(ctx, localpart, deviceID, otks); err != nil {
			if errors.Is(err, storage.ErrKeyExists) {
				return mxerr.InvalidParam("A different one-time key with one of these IDs was uploaded already")
			}
			return err
		}
		// One fallback key per algorithm (spec); of several, the last
		// by key ID wins.
		for _, k := range fallbacks {
			if err := tx.PutFallbackKey(ctx, localpart, deviceID, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		s.DevicesChanged(ctx, localpart, []string{deviceID}, false)
	}
	return s.OneTimeKeyCounts(ctx, localpart, deviceID)
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm;
// signed_curve25519 is always listed, as clients expect (Synapse does the
// same).
func (s *Service) OneTimeKeyCounts(ctx context.Context, localpart, deviceID string) (map[string]int, error) {
	return OneTimeKeyCounts(ctx, s.db, localpart, deviceID)
}

// OneTimeKeyCounts is Service.OneTimeKeyCounts for readers holding only
// the database (sync).
func OneTimeKeyCounts(ctx context.Context, db *storage.DB, localpart, deviceID string) (map[string]int, error) {
	counts, err := db.OneTimeKeyCounts(ctx, localpart, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return counts, nil
}

// checkDeviceKeys validates uploaded device keys: they must be the
// requester's own device's, and their self-signature must verify when
// they carry one.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, error) {
	var k deviceKeysBody
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, mxerr.BadJSON("Invalid device_keys: " + err.Error())
	}
	if k.UserID != userID || k.DeviceID != deviceID {
		return nil, mxerr.InvalidParam("device_keys must be those of the requesting user and device")
	}
	if k.Keys == nil || k.Algorithms == nil {
		return nil, mxerr.MissingParam("device_keys needs algorithms and keys")
	}
	keyID := "ed25519:" + deviceID
	if pub, ok := k.Keys[keyID]; ok {
		if _, signed := k.Signatures[userID][keyID]; signed {
			if err := verifySignature(raw, userID, keyID, pub); err != nil {
				return nil, mxerr.InvalidSignature("The device keys' signature does not verify")
			}
		}
	}
	return compact(withoutUnsigned(raw)), nil
}

// parseKeyMap turns {"<algorithm>:<key ID>": key} into keys, ordered by
// algorithm and key ID.
func parseKeyMap(m map[string]json.RawMessage, field string) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(m))
	for name, v := range m {
		alg, id, ok := strings.Cut(name, ":")
		if !ok || alg == "" || id == "" {
			return nil, mxerr.InvalidParam(field + " names must be <algorithm>:<key ID>")
		}
		if len(v) == 0 || (v[0] != '"' && v[0] != '{') {
			return nil, mxerr.BadJSON(field + " values must be strings or objects")
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: id, JSON: compact(v)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Algorithm != out[j].Algorithm {
			return out[i].Algorithm < out[j].Algorithm
		}
		return out[i].KeyID < out[j].KeyID
	})
	return out, nil
}
