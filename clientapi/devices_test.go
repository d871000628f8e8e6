package clientapi_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

func TestDevices(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	phone := login(t, s, "alice", testPassword)

	devs, err := alice.GetDevicesInfo(ctx)
	if err != nil || len(devs.Devices) != 2 {
		t.Fatalf("devices = %+v, %v", devs, err)
	}
	for _, d := range devs.Devices {
		if d.LastSeenTS == 0 {
			t.Errorf("device %s has no last_seen_ts", d.DeviceID)
		}
	}
	if err := alice.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Alice's phone"}); err != nil {
		t.Fatal(err)
	}
	info, err := alice.GetDeviceInfo(ctx, phone.DeviceID)
	if err != nil || info.DisplayName != "Alice's phone" {
		t.Fatalf("device = %+v, %v", info, err)
	}
	_, err = alice.GetDeviceInfo(ctx, "NOSUCHDEVICE")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	err = alice.SetDeviceInfo(ctx, "NOSUCHDEVICE", &mautrix.ReqDeviceInfo{DisplayName: "x"})
	expectMatrixError(t, err, 404, "M_NOT_FOUND")

	// Another user cannot see or touch Alice's devices.
	bob := registerUser(t, s, "bob")
	_, err = bob.GetDeviceInfo(ctx, phone.DeviceID)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
}

func TestDeleteDeviceNeedsPassword(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	phone := login(t, s, "alice", testPassword)
	url := clientURL(s, "/devices/"+string(phone.DeviceID))

	first := do(t, "DELETE", url, alice.AccessToken, nil)
	if first.Status != 401 || first.Body["session"] == nil {
		t.Fatalf("delete without auth = %d %s", first.Status, first.Raw)
	}
	stages := first.Body["flows"].([]any)[0].(map[string]any)["stages"].([]any)
	if stages[0] != "m.login.password" {
		t.Fatalf("flows = %s", first.Raw)
	}
	session := first.Body["session"].(string)
	wrong := do(t, "DELETE", url, alice.AccessToken, map[string]any{"auth": passwordAuth(session, alice.UserID, "wrong password")})
	if wrong.Status != 401 || wrong.errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password = %d %s", wrong.Status, wrong.Raw)
	}
	// Bob's password does not authorize Alice's request.
	registerUser(t, s, "bob")
	other := do(t, "DELETE", url, alice.AccessToken, map[string]any{"auth": passwordAuth(session, "@bob:test.veche", testPassword)})
	if other.Status != 401 || other.errcode() != "M_FORBIDDEN" {
		t.Fatalf("other user's password = %d %s", other.Status, other.Raw)
	}
	ok := do(t, "DELETE", url, alice.AccessToken, map[string]any{"auth": passwordAuth(session, alice.UserID, testPassword)})
	if ok.Status != 200 {
		t.Fatalf("delete = %d %s", ok.Status, ok.Raw)
	}
	_, err := phone.Whoami(ctx)
	expectMatrixError(t, err, 401, "M_UNKNOWN_TOKEN")
	// Deleting a device that is already gone succeeds (spec).
	r := do(t, "DELETE", url, alice.AccessToken, nil)
	gone := do(t, "DELETE", url, alice.AccessToken, map[string]any{"auth": passwordAuth(r.Body["session"].(string), alice.UserID, testPassword)})
	if gone.Status != 200 {
		t.Fatalf("delete of a deleted device = %d %s", gone.Status, gone.Raw)
	}
	// A session started for one device cannot delete another.
	laptop := login(t, s, "alice", testPassword)
	expectError(t, do(t, "DELETE", clientURL(s, "/devices/"+string(laptop.DeviceID)), alice.AccessToken,
		map[string]any{"auth": passwordAuth(session, alice.UserID, testPassword)}), 403, "M_FORBIDDEN")
}

func TestDeleteDevicesWithMautrix(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	a := login(t, s, "alice", testPassword)
	b := login(t, s, "alice", testPassword)
	req := &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{a.DeviceID, b.DeviceID}}
	err := alice.DeleteDevices(ctx, req)
	var he mautrix.HTTPError
	if !asHTTPError(err, &he) || he.Response.StatusCode != 401 {
		t.Fatalf("delete_devices without auth: %v", err)
	}
	uia := do(t, "POST", clientURL(s, "/delete_devices"), alice.AccessToken, map[string]any{"devices": []string{}})
	req.Auth = passwordAuth(uia.Body["session"].(string), alice.UserID, testPassword)
	// The session was started by a request with other devices, but the
	// operation (delete_devices) is the same: allowed, as Synapse does.
	if err := alice.DeleteDevices(ctx, req); err != nil {
		t.Fatal(err)
	}
	devs, err := alice.GetDevicesInfo(ctx)
	if err != nil || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != alice.DeviceID {
		t.Fatalf("remaining devices = %+v, %v", devs, err)
	}
	expectError(t, do(t, "POST", clientURL(s, "/delete_devices"), alice.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")
}
