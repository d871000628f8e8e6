package federation

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
)

// Device lists and end-to-end keys over federation (spec: "Device
// Management" and "End-to-End Encryption"), answered from the e2ee key
// store: only local users, and only their own signatures (a user-signing
// signature is for its signer's eyes).

// userDevices is GET /_matrix/federation/v1/user/devices/{userId}.
func (f *Federation) userDevices(r *http.Request) (any, error) {
	userID, err := spec.NewUserID(r.PathValue("userId"), true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if userID.Domain() != f.serverName {
		return nil, mxerr.InvalidParam("The user is not local to this server")
	}
	// An unknown or deactivated user has no devices: the list is empty,
	// as Synapse answers.
	return f.e2ee.UserDevices(r.Context(), *userID)
}

// userKeysQuery is POST /_matrix/federation/v1/user/keys/query: every
// local user asked about is answered, with the keys of their devices.
func (f *Federation) userKeysQuery(r *http.Request) (any, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := decodeContent(r, &body); err != nil {
		return nil, err
	}
	if body.DeviceKeys == nil {
		return nil, mxerr.BadJSON("device_keys is required")
	}
	resp, err := f.e2ee.QueryLocal(r.Context(), body.DeviceKeys)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": resp.DeviceKeys, "master_keys": resp.MasterKeys, "self_signing_keys": resp.SelfSigningKeys}, nil
}

// userKeysClaim is POST /_matrix/federation/v1/user/keys/claim: one key
// per device and algorithm, one-time keys first, then fallback keys.
func (f *Federation) userKeysClaim(r *http.Request) (any, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := decodeContent(r, &body); err != nil {
		return nil, err
	}
	if body.OneTimeKeys == nil {
		return nil, mxerr.BadJSON("one_time_keys is required")
	}
	keys, err := f.e2ee.ClaimLocal(r.Context(), body.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": keys}, nil
}
