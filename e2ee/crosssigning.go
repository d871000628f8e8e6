package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// SigningKeysUpload is the body of POST /keys/device_signing/upload
// (auth is the client API's business).
type SigningKeysUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// SigningKeysNeedAuth tells whether an upload of cross-signing keys needs
// user-interactive auth (spec): not when the user has no master key yet,
// nor when every key uploaded is the one already stored (a retry).
func (s *Service) SigningKeysNeedAuth(ctx context.Context, user spec.UserID, req SigningKeysUpload) (bool, error) {
	stored, err := s.db.CrossSigningKeys(ctx, user.Local())
	if err != nil {
		return false, err
	}
	if stored[storage.CrossSigningMaster] == nil {
		return false, nil
	}
	for typ, raw := range map[string]json.RawMessage{
		storage.CrossSigningMaster: req.MasterKey, storage.CrossSigningSelfSigning: req.SelfSigningKey,
		storage.CrossSigningUserSigning: req.UserSigningKey,
	} {
		if present(raw) && (stored[typ] == nil || !sameSignedPart(stored[typ], raw) || !sameSignatures(stored[typ], raw)) {
			return true, nil
		}
	}
	return false, nil
}

// sameSignatures compares the signatures members of two key objects.
func sameSignatures(a, b []byte) bool {
	oa, err := parseObject(a)
	if err != nil {
		return false
	}
	ob, err := parseObject(b)
	if err != nil {
		return false
	}
	ja, _ := json.Marshal(oa.signatures())
	jb, _ := json.Marshal(ob.signatures())
	return string(ja) == string(jb)
}

// UploadSigningKeys stores a user's cross-signing keys after checking
// them (spec: the self-signing and user-signing keys must be signed by
// the master key uploaded with them, or else the stored one).
func (s *Service) UploadSigningKeys(ctx context.Context, user spec.UserID, req SigningKeysUpload) error {
	userID, localpart := user.String(), user.Local()
	stored, err := s.db.CrossSigningKeys(ctx, localpart)
	if err != nil {
		return err
	}
	puts := map[string][]byte{}
	var master parsedCrossSigningKey
	if present(req.MasterKey) {
		if master, err = parseCrossSigningKey(req.MasterKey, userID, storage.CrossSigningMaster); err != nil {
			return err
		}
		puts[storage.CrossSigningMaster] = master.raw
	} else if raw := stored[storage.CrossSigningMaster]; raw != nil {
		master = parsedCrossSigningKey{raw: raw, pub: publicKeyOf(raw)}
		master.keyID = "ed25519:" + master.pub
	}
	for typ, raw := range map[string]json.RawMessage{
		storage.CrossSigningSelfSigning: req.SelfSigningKey, storage.CrossSigningUserSigning: req.UserSigningKey,
	} {
		if !present(raw) {
			continue
		}
		k, err := parseCrossSigningKey(raw, userID, typ)
		if err != nil {
			return err
		}
		if master.pub == "" {
			return mxerr.MissingParam("No master key is available to check the " + typ + " key against")
		}
		if err := verifySignature(k.raw, userID, master.keyID, master.pub); err != nil {
			return mxerr.InvalidSignature("The " + typ + " key is not signed by the master key")
		}
		puts[typ] = k.raw
	}
	if len(puts) == 0 {
		return nil
	}
	// A cross-signing key named like one of the user's devices would make
	// signatures ambiguous (spec: 403).
	devices, err := s.db.Devices(ctx, localpart)
	if err != nil {
		return err
	}
	for _, raw := range puts {
		pub := publicKeyOf(raw)
		for _, d := range devices {
			if d.DeviceID == pub {
				return mxerr.Forbidden("A cross-signing key's public key is the ID of one of your devices")
			}
		}
	}
	err = s.db.Transact(ctx, func(tx *storage.Tx) error {
		types := make([]string, 0, len(puts))
		for typ := range puts {
			types = append(types, typ)
		}
		sort.Strings(types)
		for _, typ := range types {
			if err := tx.PutCrossSigningKey(ctx, localpart, typ, puts[typ]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.signingKeysChanged(context.WithoutCancel(ctx), localpart); err != nil {
		s.log.WithError(err).WithField("user_id", userID).Warn("Announcing new cross-signing keys failed")
	}
	return nil
}

// UploadSignatures stores signatures a user made (spec: POST
// /keys/signatures/upload): of their own devices by their self-signing
// key, of their own master key by one of their devices, and of other
// users' master keys by their user-signing key. It returns the failures
// by user and key ID.
func (s *Service) UploadSignatures(ctx context.Context, user spec.UserID, body map[string]map[string]json.RawMessage) (map[string]map[string]any, error) {
	userID, localpart := user.String(), user.Local()
	failures := map[string]map[string]any{}
	fail := func(target, keyID string, err *mxerr.Error) {
		if failures[target] == nil {
			failures[target] = map[string]any{}
		}
		failures[target][keyID] = err
	}
	mine, err := s.db.CrossSigningKeys(ctx, localpart)
	if err != nil {
		return nil, err
	}
	var changedDevices []string
	changedUsers := map[string]bool{}
	masterSigned := false
	targets := make([]string, 0, len(body))
	for t := range body {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, target := range targets {
		keys := body[target]
		if target == userID {
			for keyID, obj := range keys {
				sigs, err := s.ownSignatures(ctx, user, mine, keyID, obj)
				if err != nil {
					var me *mxerr.Error
					if errors.As(err, &me) {
						fail(target, keyID, me)
						continue
					}
					return nil, err
				}
				for _, sig := range sigs {
					if err := s.db.PutKeySignature(ctx, sig); err != nil {
						return nil, err
					}
				}
				if keyID == publicKeyOf(mine[storage.CrossSigningMaster]) {
					masterSigned = true
				} else {
					changedDevices = append(changedDevices, keyID)
				}
			}
			continue
		}
		for keyID, obj := range keys {
			sig, err := s.userSignature(ctx, userID, mine, target, keyID, obj)
			if err != nil {
				var me *mxerr.Error
				if errors.As(err, &me) {
					fail(target, keyID, me)
					continue
				}
				return nil, err
			}
			if err := s.db.PutKeySignature(ctx, sig); err != nil {
				return nil, err
			}
			changedUsers[target] = true
		}
	}
	// Clients learn of the new signatures by querying again: the devices
	// signed go out as device list updates, a signed master key as a
	// signing key update, and other users' keys the user signed show up
	// as changed for everyone here sharing a room with them (the
	// signature itself is visible to its signer only).
	if len(changedDevices) > 0 {
		sort.Strings(changedDevices)
		s.DevicesChanged(ctx, localpart, changedDevices, false)
	}
	if masterSigned {
		if err := s.signingKeysChanged(context.WithoutCancel(ctx), localpart); err != nil {
			s.log.WithError(err).WithField("user_id", userID).Warn("Announcing a signed master key failed")
		}
	}
	for _, target := range sorted(changedUsers) {
		lock := s.userLock(target)
		lock.Lock()
		_, _, _, err := s.recordChange(context.WithoutCancel(ctx), target, 1)
		lock.Unlock()
		if err != nil {
			s.log.WithError(err).WithField("user_id", target).Warn("Recording a signature change failed")
		}
	}
	return failures, nil
}

// ownSignatures checks the signatures a user uploads on one of their own
// keys: a device's keys signed by their self-signing key, or their master
// key signed by one of their devices.
func (s *Service) ownSignatures(ctx context.Context, user spec.UserID, mine map[string][]byte, keyID string, obj []byte) ([]storage.KeySignature, error) {
	userID := user.String()
	signed, err := parseObject(obj)
	if err != nil {
		return nil, mxerr.BadJSON("The signed object is not a JSON object")
	}
	sigs := signed.signatures()[userID]
	if master := mine[storage.CrossSigningMaster]; master != nil && keyID == publicKeyOf(master) {
		if !sameSignedPart(master, obj) {
			return nil, mxerr.InvalidParam("The signed object is not your master key")
		}
		devices, err := s.db.DeviceKeysOf(ctx, user.Local(), nil)
		if err != nil {
			return nil, err
		}
		var out []storage.KeySignature
		for _, d := range devices {
			sigKey := "ed25519:" + d.DeviceID
			if _, ok := sigs[sigKey]; !ok {
				continue
			}
			if err := verifySignature(obj, userID, sigKey, deviceEd25519(d.KeyJSON, d.DeviceID)); err != nil {
				return nil, mxerr.InvalidSignature("Invalid signature by device " + d.DeviceID)
			}
			out = append(out, storage.KeySignature{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: userID,
				SignerKeyID: sigKey, Signature: signatureString(sigs[sigKey])})
		}
		if len(out) == 0 {
			return nil, mxerr.InvalidSignature("No signature by one of your devices")
		}
		return out, nil
	}
	devices, err := s.db.DeviceKeysOf(ctx, user.Local(), []string{keyID})
	if err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return nil, mxerr.NotFound("Unknown key " + keyID)
	}
	if !sameSignedPart(devices[0].KeyJSON, obj) {
		return nil, mxerr.InvalidParam("The signed object is not the device's keys")
	}
	selfSigning := mine[storage.CrossSigningSelfSigning]
	if selfSigning == nil {
		return nil, mxerr.MissingParam("You have no self-signing key")
	}
	pub := publicKeyOf(selfSigning)
	sigKey := "ed25519:" + pub
	if _, ok := sigs[sigKey]; !ok {
		return nil, mxerr.InvalidSignature("No signature by your self-signing key")
	}
	if err := verifySignature(obj, userID, sigKey, pub); err != nil {
		return nil, mxerr.InvalidSignature("Invalid signature by your self-signing key")
	}
	return []storage.KeySignature{{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: userID,
		SignerKeyID: sigKey, Signature: signatureString(sigs[sigKey])}}, nil
}

// userSignature checks a signature of another user's master key by the
// signer's user-signing key.
func (s *Service) userSignature(ctx context.Context, signer string, mine map[string][]byte, target, keyID string, obj []byte) (storage.KeySignature, error) {
	userSigning := mine[storage.CrossSigningUserSigning]
	if userSigning == nil {
		return storage.KeySignature{}, mxerr.MissingParam("You have no user-signing key")
	}
	master, err := s.masterKeyOf(ctx, target)
	if err != nil {
		return storage.KeySignature{}, err
	}
	if master == nil || keyID != publicKeyOf(master) {
		return storage.KeySignature{}, mxerr.NotFound("Unknown master key " + keyID + " of " + target)
	}
	if !sameSignedPart(master, obj) {
		return storage.KeySignature{}, mxerr.InvalidParam("The signed object is not the user's master key")
	}
	signed, err := parseObject(obj)
	if err != nil {
		return storage.KeySignature{}, mxerr.BadJSON("The signed object is not a JSON object")
	}
	pub := publicKeyOf(userSigning)
	sigKey := "ed25519:" + pub
	sig, ok := signed.signatures()[signer][sigKey]
	if !ok {
		return storage.KeySignature{}, mxerr.InvalidSignature("No signature by your user-signing key")
	}
	if err := verifySignature(obj, signer, sigKey, pub); err != nil {
		return storage.KeySignature{}, mxerr.InvalidSignature("Invalid signature by your user-signing key")
	}
	return storage.KeySignature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: sigKey,
		Signature: signatureString(sig)}, nil
}

// masterKeyOf returns a user's master key: a local user's from storage, a
// remote user's from their server. nil when they have none.
func (s *Service) masterKeyOf(ctx context.Context, userID string) ([]byte, error) {
	if localpart, ok := s.localpart(userID); ok {
		stored, err := s.db.CrossSigningKeys(ctx, localpart)
		if err != nil {
			return nil, err
		}
		return stored[storage.CrossSigningMaster], nil
	}
	server := serverOf(userID)
	if server == "" {
		return nil, mxerr.InvalidParam("Invalid user ID " + userID)
	}
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	keys, err := s.queryRemote(ctx, server, map[string][]string{userID: {}})
	if err != nil {
		return nil, &mxerr.Error{Status: 502, ErrCode: "M_UNKNOWN", Message: "Could not fetch the master key of " + userID}
	}
	return keys.MasterKeys[userID], nil
}

func signatureString(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}
