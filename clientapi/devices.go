package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// listDevices is GET /devices.
func (a *API) listDevices(r *http.Request) (any, error) {
	devs, err := a.db.Devices(r.Context(), requester(r).Localpart())
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	return map[string]any{"devices": out}, nil
}

// getDevice is GET /devices/{deviceId}.
func (a *API) getDevice(r *http.Request) (any, error) {
	d, err := a.db.Device(r.Context(), requester(r).Localpart(), r.PathValue("deviceId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(d), nil
}

// updateDevice is PUT /devices/{deviceId}. Creating devices this way is
// reserved for application services (spec v1.17), which Veche does not
// host yet, so an unknown device is 404.
func (a *API) updateDevice(r *http.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DisplayName != nil && len(*req.DisplayName) > maxDeviceNameBytes {
		return nil, mxerr.InvalidParam("display_name is too long")
	}
	err := a.db.RenameDevice(r.Context(), requester(r).Localpart(), r.PathValue("deviceId"), req.DisplayName)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown device")
	}
	if err == nil && a.keys != nil {
		// Clients read device names from key queries: tell them to look again.
		a.keys.DevicesChanged(r.Context(), requester(r).Localpart(), []string{r.PathValue("deviceId")}, false)
	}
	return struct{}{}, err
}

const maxDeviceNameBytes = 256

// deleteDevice is DELETE /devices/{deviceId}, behind the user's password.
func (a *API) deleteDevice(r *http.Request) (any, error) {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	deviceID := r.PathValue("deviceId")
	if _, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "delete_device " + deviceID, flows: [][]string{{stagePassword}}, user: requester(r)}); err != nil {
		return nil, err
	}
	return struct{}{}, a.accounts.DeleteDevices(r.Context(), requester(r).Localpart(), []string{deviceID})
}

// deleteDevices is POST /delete_devices.
func (a *API) deleteDevices(r *http.Request) (any, error) {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices []string        `json:"devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxerr.MissingParam("devices is required")
	}
	if _, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "delete_devices", flows: [][]string{{stagePassword}}, user: requester(r)}); err != nil {
		return nil, err
	}
	return struct{}{}, a.accounts.DeleteDevices(r.Context(), requester(r).Localpart(), req.Devices)
}

// decodeOptionalJSON is DecodeJSON for endpoints whose body may be empty
// (DELETE with UIA: the first request often has none).
func decodeOptionalJSON(r *http.Request, v any) error {
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	return httpapi.UnmarshalObject(body, v)
}
