package clientapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

func TestDiscovery(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) {
		c.WellKnown.Server = "matrix.example.org:443"
		c.PublicBaseURL = "https://matrix.example.org"
	}))
	cli := newClient(t, s)

	versions, err := cli.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !versions.Contains(mautrix.SpecV11) || !versions.Contains(mautrix.SpecV110) {
		t.Fatalf("versions %v lack v1.1 or v1.10", versions.Versions)
	}

	wk := do(t, "GET", s.URL+"/.well-known/matrix/client", "", nil)
	hs, _ := wk.Body["m.homeserver"].(map[string]any)
	if wk.Status != 200 || hs["base_url"] != "https://matrix.example.org/" {
		t.Fatalf("well-known client = %d %s", wk.Status, wk.Raw)
	}
	if wk.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("well-known client lacks CORS headers")
	}
	srv := do(t, "GET", s.URL+"/.well-known/matrix/server", "", nil)
	if srv.Status != 200 || srv.Body["m.server"] != "matrix.example.org:443" {
		t.Fatalf("well-known server = %d %s", srv.Status, srv.Raw)
	}

	plain := testserver.Start(t)
	expectError(t, do(t, "GET", plain.URL+"/.well-known/matrix/server", "", nil), 404, "M_NOT_FOUND")
}

func TestCapabilities(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	expectError(t, do(t, "GET", clientURL(s, "/capabilities"), "", nil), 401, "M_MISSING_TOKEN")
	alice := registerUser(t, s, "alice")
	caps, err := alice.Capabilities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if caps.ChangePassword == nil || !caps.ChangePassword.Enabled {
		t.Fatal("m.change_password not enabled")
	}
	if caps.RoomVersions == nil || caps.RoomVersions.Default != "12" || len(caps.RoomVersions.Available) != 12 {
		t.Fatalf("m.room_versions = %+v", caps.RoomVersions)
	}
	raw := do(t, "GET", clientURL(s, "/capabilities"), alice.AccessToken, nil)
	c := raw.Body["capabilities"].(map[string]any)
	for _, name := range []string{"m.set_displayname", "m.set_avatar_url", "m.profile_fields"} {
		if c[name].(map[string]any)["enabled"] != true {
			t.Errorf("%s not enabled", name)
		}
	}
	if c["m.3pid_changes"].(map[string]any)["enabled"] != false {
		t.Error("m.3pid_changes must be disabled: Veche binds no third-party IDs")
	}
}

func TestUnknownEndpointsAndMethods(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	for _, path := range []string{"/_matrix/client/v3/nonexistent", "/_matrix/client/v3/account/whoami/extra", "/somewhere"} {
		expectError(t, do(t, "GET", s.URL+path, "", nil), 404, "M_UNRECOGNIZED")
	}
	r := do(t, "DELETE", clientURL(s, "/login"), "", nil)
	expectError(t, r, http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Fatalf("Allow = %q", allow)
	}
	// The legacy r0 prefix still serves the old endpoints.
	if r := do(t, "GET", s.URL+"/_matrix/client/r0/login", "", nil); r.Status != 200 {
		t.Fatalf("r0 login flows = %d", r.Status)
	}
}

func TestCORSAndRequestID(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	pre := do(t, "OPTIONS", clientURL(s, "/login"), "", nil)
	if pre.Status != http.StatusNoContent {
		t.Fatalf("preflight = %d", pre.Status)
	}
	for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
		if pre.Header.Get(h) == "" {
			t.Errorf("preflight lacks %s", h)
		}
	}
	if !strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Error("Authorization is not an allowed header")
	}
	r := do(t, "GET", clientURL(s, "/login"), "", nil)
	if r.Header.Get("X-Request-ID") == "" || r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("headers = %v", r.Header)
	}
	req, _ := http.NewRequest("GET", clientURL(s, "/login"), nil)
	req.Header.Set("X-Request-ID", "trace-me-123")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Request-ID"); got != "trace-me-123" {
		t.Fatalf("request ID not echoed: %q", got)
	}
	req.Header.Set("X-Request-ID", "bad id\nwith newline")
	if res, err = http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		if slices.Contains([]string{"bad id\nwith newline", ""}, res.Header.Get("X-Request-ID")) {
			t.Fatal("an unsafe request ID was echoed")
		}
	}
}
