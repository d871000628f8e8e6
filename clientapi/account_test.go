package clientapi_test

import (
	"testing"

	"github.com/veche/veche/internal/testserver"
)

func TestChangePassword(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	phone := login(t, s, "alice", testPassword)
	url := clientURL(s, "/account/password")

	expectError(t, do(t, "POST", url, "", map[string]any{"new_password": "new password 1"}), 401, "M_MISSING_TOKEN")
	expectError(t, do(t, "POST", url, alice.AccessToken, map[string]any{"new_password": "short"}), 400, "M_WEAK_PASSWORD")
	first := do(t, "POST", url, alice.AccessToken, map[string]any{"new_password": "new password 1"})
	if first.Status != 401 {
		t.Fatalf("without auth = %d %s", first.Status, first.Raw)
	}
	ok := do(t, "POST", url, alice.AccessToken, map[string]any{"new_password": "new password 1",
		"auth": passwordAuth(first.Body["session"].(string), alice.UserID, testPassword)})
	if ok.Status != 200 {
		t.Fatalf("change = %d %s", ok.Status, ok.Raw)
	}
	// Other devices are logged out by default; the caller's stays.
	_, err := phone.Whoami(ctx)
	expectMatrixError(t, err, 401, "M_UNKNOWN_TOKEN")
	if _, err := alice.Whoami(ctx); err != nil {
		t.Fatalf("requesting device was logged out: %v", err)
	}
	expectError(t, do(t, "POST", clientURL(s, "/login"), "", map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword}), 403, "M_FORBIDDEN")
	tablet := login(t, s, "alice", "new password 1")

	// logout_devices: false keeps the other devices.
	first = do(t, "POST", url, alice.AccessToken, map[string]any{})
	ok = do(t, "POST", url, alice.AccessToken, map[string]any{"new_password": "new password 2", "logout_devices": false,
		"auth": passwordAuth(first.Body["session"].(string), alice.UserID, "new password 1")})
	if ok.Status != 200 {
		t.Fatalf("second change = %d %s", ok.Status, ok.Raw)
	}
	if _, err := tablet.Whoami(ctx); err != nil {
		t.Fatalf("logout_devices=false logged a device out: %v", err)
	}
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	phone := login(t, s, "alice", testPassword)
	url := clientURL(s, "/account/deactivate")
	first := do(t, "POST", url, alice.AccessToken, nil)
	if first.Status != 401 {
		t.Fatalf("without auth = %d %s", first.Status, first.Raw)
	}
	wrong := do(t, "POST", url, alice.AccessToken, map[string]any{"auth": passwordAuth(first.Body["session"].(string), alice.UserID, "guess")})
	if wrong.Status != 401 || wrong.errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password = %d %s", wrong.Status, wrong.Raw)
	}
	ok := do(t, "POST", url, alice.AccessToken, map[string]any{"erase": true, "auth": passwordAuth(first.Body["session"].(string), alice.UserID, testPassword)})
	if ok.Status != 200 || ok.Body["id_server_unbind_result"] != "no-support" {
		t.Fatalf("deactivate = %d %s", ok.Status, ok.Raw)
	}
	for _, tok := range []string{alice.AccessToken, phone.AccessToken} {
		expectError(t, do(t, "GET", clientURL(s, "/account/whoami"), tok, nil), 401, "M_UNKNOWN_TOKEN")
	}
	expectError(t, do(t, "POST", clientURL(s, "/login"), "", map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/profile/@alice:test.veche"), "", nil), 404, "M_NOT_FOUND")
	// The name is never handed out again.
	expectError(t, do(t, "POST", clientURL(s, "/register"), "", map[string]any{"username": "alice", "password": testPassword}), 400, "M_USER_IN_USE")
}

func TestThreePIDs(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	r := do(t, "GET", clientURL(s, "/account/3pid"), alice.AccessToken, nil)
	if r.Status != 200 || len(r.Body["threepids"].([]any)) != 0 {
		t.Fatalf("3pids = %d %s", r.Status, r.Raw)
	}
}
