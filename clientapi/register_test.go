package clientapi_test

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

func TestRegisterDummyFlow(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	if alice.UserID != "@alice:test.veche" || alice.AccessToken == "" || alice.DeviceID == "" {
		t.Fatalf("registered %s token=%q device=%q", alice.UserID, alice.AccessToken, alice.DeviceID)
	}
	who, err := alice.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who.UserID != alice.UserID || who.DeviceID != alice.DeviceID {
		t.Fatalf("whoami = %+v", who)
	}

	// The first request gets the flows and a session; nothing is created.
	first := do(t, "POST", clientURL(s, "/register"), "", map[string]any{"username": "bob", "password": testPassword})
	if first.Status != 401 || first.Body["session"] == "" || first.errcode() != "" {
		t.Fatalf("first register = %d %s", first.Status, first.Raw)
	}
	flows := first.Body["flows"].([]any)
	if len(flows) != 1 || flows[0].(map[string]any)["stages"].([]any)[0] != "m.login.dummy" {
		t.Fatalf("flows = %v", flows)
	}
	session := first.Body["session"].(string)
	body := map[string]any{"username": "bob", "password": testPassword, "initial_device_display_name": "Bob's laptop",
		"auth": map[string]any{"type": "m.login.dummy", "session": session}}
	done := do(t, "POST", clientURL(s, "/register"), "", body)
	if done.Status != 200 || done.Body["user_id"] != "@bob:test.veche" || done.Body["home_server"] != "test.veche" {
		t.Fatalf("register = %d %s", done.Status, done.Raw)
	}
	// Retrying a completed session answers the same (spec: completed
	// stages cannot be retried).
	again := do(t, "POST", clientURL(s, "/register"), "", body)
	if again.Status != 200 || again.Body["access_token"] != done.Body["access_token"] {
		t.Fatalf("retry = %d %s", again.Status, again.Raw)
	}
	devices := do(t, "GET", clientURL(s, "/devices"), done.Body["access_token"].(string), nil)
	dev := devices.Body["devices"].([]any)[0].(map[string]any)
	if dev["display_name"] != "Bob's laptop" {
		t.Fatalf("device = %v", dev)
	}
	// The default display name is the localpart.
	if p := do(t, "GET", clientURL(s, "/profile/@bob:test.veche"), "", nil); p.Body["displayname"] != "bob" {
		t.Fatalf("profile = %s", p.Raw)
	}
	// A session cannot be moved to another operation.
	expectError(t, do(t, "POST", clientURL(s, "/register"), "", map[string]any{"username": "carl", "password": testPassword,
		"auth": map[string]any{"type": "m.login.dummy", "session": "no-such-session"}}), 400, "M_UNKNOWN")
}

func TestRegisterOptions(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	cli := newClient(t, s)

	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Carol", Password: testPassword, InhibitLogin: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.UserID != "@carol:test.veche" || resp.AccessToken != "" || resp.DeviceID != "" {
		t.Fatalf("inhibit_login register = %+v", resp)
	}
	login(t, s, "carol", testPassword)

	resp, err = cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "dave", Password: testPassword, DeviceID: "DAVEPHONE", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.DeviceID != "DAVEPHONE" || resp.RefreshToken == "" || resp.ExpiresInMS <= 0 {
		t.Fatalf("register with device and refresh = %+v", resp)
	}

	// No username: the server picks one.
	resp, err = cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(resp.UserID), ":test.veche") || resp.AccessToken == "" {
		t.Fatalf("generated user = %+v", resp)
	}
}

func TestRegisterRefusals(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	registerUser(t, s, "alice")
	url := clientURL(s, "/register")
	tests := []struct {
		name    string
		body    any
		status  int
		errcode string
	}{
		{"taken, before auth", map[string]any{"username": "alice", "password": testPassword}, 400, "M_USER_IN_USE"},
		{"taken, other case", map[string]any{"username": "ALICE", "password": testPassword}, 400, "M_USER_IN_USE"},
		{"bad characters", map[string]any{"username": "bad name!", "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"numeric", map[string]any{"username": "12345", "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"bridge namespace", map[string]any{"username": "_bridge_bot", "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"reserved", map[string]any{"username": "admin", "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"other server", map[string]any{"username": "@eve:elsewhere.org", "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"too long", map[string]any{"username": strings.Repeat("a", 250), "password": testPassword}, 400, "M_INVALID_USERNAME"},
		{"weak password", map[string]any{"username": "frank", "password": "short"}, 400, "M_WEAK_PASSWORD"},
		{"not JSON", "username=frank", 400, "M_NOT_JSON"},
		{"JSON array", `["frank"]`, 400, "M_NOT_JSON"},
		{"wrong type", map[string]any{"username": 42}, 400, "M_BAD_JSON"},
		{"bad kind", nil, 400, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := url
			if tt.body == nil {
				u += "?kind=robot"
				tt.body = map[string]any{}
			}
			expectError(t, do(t, "POST", u, "", tt.body), tt.status, tt.errcode)
		})
	}

	// Auth complete but no password: refused, not an account without one.
	first := do(t, "POST", url, "", map[string]any{"username": "gina"})
	done := do(t, "POST", url, "", map[string]any{"username": "gina", "auth": map[string]any{"type": "m.login.dummy", "session": first.Body["session"]}})
	expectError(t, done, 400, "M_MISSING_PARAM")

	// An auth type that is not offered fails the stage, keeping the session.
	bad := do(t, "POST", url, "", map[string]any{"username": "hana", "password": testPassword,
		"auth": map[string]any{"type": "m.login.registration_token", "token": "x", "session": first.Body["session"]}})
	if bad.Status != 401 || bad.errcode() == "" || bad.Body["session"] != first.Body["session"] {
		t.Fatalf("unoffered stage = %d %s", bad.Status, bad.Raw)
	}
}

func TestRegisterAvailable(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	if r, err := alice.RegisterAvailable(ctx, "bob"); err != nil || !r.Available {
		t.Fatalf("bob available = %+v, %v", r, err)
	}
	_, err := alice.RegisterAvailable(ctx, "alice")
	expectMatrixError(t, err, 400, "M_USER_IN_USE")
	_, err = alice.RegisterAvailable(ctx, "Not Valid")
	expectMatrixError(t, err, 400, "M_INVALID_USERNAME")
	expectError(t, do(t, "GET", clientURL(s, "/register/available"), "", nil), 400, "M_MISSING_PARAM")
}

func TestRegistrationDisabled(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.Enabled = false }))
	expectError(t, do(t, "POST", clientURL(s, "/register"), "", map[string]any{"username": "a", "password": testPassword}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/register/available?username=a"), "", nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "POST", clientURL(s, "/register?kind=guest"), "", map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
}

func TestRegistrationToken(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.Token = "invite-2026" }))
	url := clientURL(s, "/register")
	first := do(t, "POST", url, "", map[string]any{"username": "alice", "password": testPassword})
	stages := first.Body["flows"].([]any)[0].(map[string]any)["stages"].([]any)
	if first.Status != 401 || len(stages) != 1 || stages[0] != "m.login.registration_token" {
		t.Fatalf("flows = %s", first.Raw)
	}
	session := first.Body["session"]
	// Dummy auth is not enough when a token is required.
	dummy := do(t, "POST", url, "", map[string]any{"username": "alice", "password": testPassword,
		"auth": map[string]any{"type": "m.login.dummy", "session": session}})
	if dummy.Status != 401 || dummy.errcode() == "" {
		t.Fatalf("dummy with token required = %d %s", dummy.Status, dummy.Raw)
	}
	wrong := do(t, "POST", url, "", map[string]any{"username": "alice", "password": testPassword,
		"auth": map[string]any{"type": "m.login.registration_token", "token": "guess", "session": session}})
	if wrong.Status != 401 || wrong.errcode() != "M_UNAUTHORIZED" || wrong.Body["session"] != session {
		t.Fatalf("wrong token = %d %s", wrong.Status, wrong.Raw)
	}
	ok := do(t, "POST", url, "", map[string]any{"username": "alice", "password": testPassword,
		"auth": map[string]any{"type": "m.login.registration_token", "token": "invite-2026", "session": session}})
	if ok.Status != 200 || ok.Body["user_id"] != "@alice:test.veche" {
		t.Fatalf("right token = %d %s", ok.Status, ok.Raw)
	}

	validity := s.URL + "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	if r := do(t, "GET", validity+"invite-2026", "", nil); r.Status != 200 || r.Body["valid"] != true {
		t.Fatalf("validity of the token = %s", r.Raw)
	}
	if r := do(t, "GET", validity+"nope", "", nil); r.Status != 200 || r.Body["valid"] != false {
		t.Fatalf("validity of a wrong token = %s", r.Raw)
	}
	plain := testserver.Start(t)
	expectError(t, do(t, "GET", plain.URL+"/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil), 403, "M_FORBIDDEN")
}

func TestGuests(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.AllowGuests = true }))
	cli := newClient(t, s)
	resp, _, err := cli.RegisterGuest(ctx, &mautrix.ReqRegister[any]{Username: "ignored", InitialDeviceDisplayName: "kiosk"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.UserID != "@1:test.veche" || resp.AccessToken == "" {
		t.Fatalf("guest = %+v", resp)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	who := do(t, "GET", clientURL(s, "/account/whoami"), resp.AccessToken, nil)
	if who.Status != 200 || who.Body["is_guest"] != true || who.Body["user_id"] != "@1:test.veche" {
		t.Fatalf("guest whoami = %s", who.Raw)
	}
	// Guests may set a display name, but not manage the account.
	if err := cli.SetDisplayName(ctx, "Visitor"); err != nil {
		t.Fatal(err)
	}
	expectError(t, do(t, "POST", clientURL(s, "/account/password"), resp.AccessToken, map[string]any{"new_password": "whatever12"}),
		403, "M_GUEST_ACCESS_FORBIDDEN")
	expectError(t, do(t, "POST", clientURL(s, "/account/deactivate"), resp.AccessToken, map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
	// Guests have no password to log in with.
	expectError(t, do(t, "POST", clientURL(s, "/login"), "", map[string]any{"type": "m.login.password", "user": "1", "password": ""}), 403, "M_FORBIDDEN")
	second, _, err := cli.RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
	if err != nil || second.UserID != "@2:test.veche" {
		t.Fatalf("second guest = %+v, %v", second, err)
	}
}
