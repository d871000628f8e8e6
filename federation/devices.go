package federation

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
)

// Device lists and end-to-end keys over federation (spec: "Device
// Management" and "End-to-End Encryption"). This server does not store
// end-to-end keys yet (there is no /keys/upload), so the answers list
// local devices without keys, and key queries and claims find none; the
// shapes are the spec's, so that other servers read them as "no keys".

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
	devices, err := f.db.Devices(r.Context(), userID.Local())
	if err != nil {
		return nil, err
	}
	type device struct {
		DeviceID    string `json:"device_id"`
		DisplayName string `json:"device_display_name,omitempty"`
		// Keys (spec: required) are left out while the device has
		// none, as Synapse does: there is nothing to sign or verify.
	}
	out := make([]device, 0, len(devices))
	for _, d := range devices {
		dev := device{DeviceID: d.DeviceID}
		if d.DisplayName != nil {
			dev.DisplayName = *d.DisplayName
		}
		out = append(out, dev)
	}
	// stream_id versions the list for m.device_list_update EDUs; none
	// are sent yet, so every answer is version 0.
	return map[string]any{"user_id": userID.String(), "stream_id": 0, "devices": out}, nil
}

// userKeysQuery is POST /_matrix/federation/v1/user/keys/query: every
// local user asked about is answered, with the (no) keys of their
// devices.
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
	keys := map[string]map[string]any{}
	for u := range body.DeviceKeys {
		if uid, err := spec.NewUserID(u, true); err == nil && uid.Domain() == f.serverName {
			keys[u] = map[string]any{}
		}
	}
	return map[string]any{"device_keys": keys}, nil
}

// userKeysClaim is POST /_matrix/federation/v1/user/keys/claim: no
// one-time keys are stored, so none are claimed.
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
	return map[string]any{"one_time_keys": map[string]any{}}, nil
}
