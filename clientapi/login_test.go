package clientapi_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/internal/testserver"
)

func TestLoginFlowsAndPasswordLogin(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	registerUser(t, s, "alice")
	cli := newClient(t, s)
	flows, err := cli.GetLoginFlows(ctx)
	if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
		t.Fatalf("flows = %+v, %v", flows, err)
	}
	for _, user := range []string{"alice", "@alice:test.veche", "ALICE", "@Alice:test.veche"} {
		c := login(t, s, user, testPassword)
		if c.UserID != "@alice:test.veche" {
			t.Fatalf("login as %q gave %s", user, c.UserID)
		}
	}
	// The deprecated top-level "user" field still works.
	legacy := do(t, "POST", clientURL(s, "/login"), "", map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword})
	if legacy.Status != 200 || legacy.Body["access_token"] == nil {
		t.Fatalf("legacy login = %d %s", legacy.Status, legacy.Raw)
	}
	wk, _ := legacy.Body["well_known"].(map[string]any)
	if wk["m.homeserver"] == nil {
		t.Fatalf("login lacks well_known: %s", legacy.Raw)
	}

	url := clientURL(s, "/login")
	tests := []struct {
		name    string
		body    any
		status  int
		errcode string
	}{
		{"wrong password", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "nope"}, 403, "M_FORBIDDEN"},
		{"unknown user", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "nobody"}, "password": testPassword}, 403, "M_FORBIDDEN"},
		{"other server", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@alice:elsewhere.org"}, "password": testPassword}, 403, "M_FORBIDDEN"},
		{"third-party id", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": testPassword}, 403, "M_FORBIDDEN"},
		{"no identifier", map[string]any{"type": "m.login.password", "password": testPassword}, 400, "M_MISSING_PARAM"},
		{"unknown type", map[string]any{"type": "m.login.magic"}, 400, "M_UNKNOWN"},
		{"not JSON", "{", 400, "M_NOT_JSON"},
		{"bad field type", map[string]any{"type": "m.login.password", "password": 12}, 400, "M_BAD_JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectError(t, do(t, "POST", url, "", tt.body), tt.status, tt.errcode) })
	}
}

func TestLoginReusingDeviceReplacesToken(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	registerUser(t, s, "alice")
	body := map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword, "device_id": "PHONE", "initial_device_display_name": "Phone"}
	first := do(t, "POST", clientURL(s, "/login"), "", body)
	second := do(t, "POST", clientURL(s, "/login"), "", body)
	if first.Body["device_id"] != "PHONE" || second.Body["device_id"] != "PHONE" {
		t.Fatalf("device IDs = %v, %v", first.Body["device_id"], second.Body["device_id"])
	}
	expectError(t, do(t, "GET", clientURL(s, "/account/whoami"), first.Body["access_token"].(string), nil), 401, "M_UNKNOWN_TOKEN")
	if r := do(t, "GET", clientURL(s, "/account/whoami"), second.Body["access_token"].(string), nil); r.Status != 200 {
		t.Fatalf("new token = %d", r.Status)
	}
}

func TestAccessTokenTransport(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	whoami := clientURL(s, "/account/whoami")
	expectError(t, do(t, "GET", whoami, "", nil), 401, "M_MISSING_TOKEN")
	expectError(t, do(t, "GET", whoami, "not-a-token", nil), 401, "M_UNKNOWN_TOKEN")
	// The query parameter is deprecated but clients still send it.
	if r := do(t, "GET", whoami+"?access_token="+alice.AccessToken, "", nil); r.Status != 200 || r.Body["user_id"] != "@alice:test.veche" {
		t.Fatalf("query token = %d %s", r.Status, r.Raw)
	}
	req, _ := http.NewRequest("GET", whoami, nil)
	req.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("Basic auth = %d", res.StatusCode)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	phone := login(t, s, "alice", testPassword)
	laptop := login(t, s, "alice", testPassword)

	if _, err := phone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := phone.Whoami(ctx)
	expectMatrixError(t, err, 401, "M_UNKNOWN_TOKEN")
	devs, err := alice.GetDevicesInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs.Devices) != 2 {
		t.Fatalf("after logout %d devices remain, want 2", len(devs.Devices))
	}
	if _, err := laptop.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{alice, laptop} {
		_, err := c.Whoami(ctx)
		expectMatrixError(t, err, 401, "M_UNKNOWN_TOKEN")
	}
	c := login(t, s, "alice", testPassword)
	devs, err = c.GetDevicesInfo(ctx)
	if err != nil || len(devs.Devices) != 1 {
		t.Fatalf("devices after logout/all and a new login = %+v, %v", devs, err)
	}
}

func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	registerUser(t, s, "alice")
	r := do(t, "POST", clientURL(s, "/login"), "", map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword, "refresh_token": true})
	if r.Status != 200 || r.Body["refresh_token"] == nil || r.Body["expires_in_ms"].(float64) != 300000 {
		t.Fatalf("login with refresh = %s", r.Raw)
	}
	a1, r1 := r.Body["access_token"].(string), r.Body["refresh_token"].(string)

	ref := do(t, "POST", clientURL(s, "/refresh"), "", map[string]any{"refresh_token": r1})
	if ref.Status != 200 || ref.Body["access_token"] == a1 || ref.Body["refresh_token"] == r1 || ref.Body["expires_in_ms"] == nil {
		t.Fatalf("refresh = %s", ref.Raw)
	}
	a2 := ref.Body["access_token"].(string)
	whoami := clientURL(s, "/account/whoami")
	// The old access token works until the new one is used.
	if do(t, "GET", whoami, a1, nil).Status != 200 {
		t.Fatal("old access token rejected before the new one was used")
	}
	if do(t, "GET", whoami, a2, nil).Status != 200 {
		t.Fatal("new access token rejected")
	}
	expectError(t, do(t, "GET", whoami, a1, nil), 401, "M_UNKNOWN_TOKEN")
	expectError(t, do(t, "POST", clientURL(s, "/refresh"), "", map[string]any{"refresh_token": r1}), 401, "M_UNKNOWN_TOKEN")
	expectError(t, do(t, "POST", clientURL(s, "/refresh"), "", map[string]any{"refresh_token": "vrt_bogus"}), 401, "M_UNKNOWN_TOKEN")
	expectError(t, do(t, "POST", clientURL(s, "/refresh"), "", map[string]any{}), 400, "M_MISSING_PARAM")
}
