package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

func TestLoginRateLimits(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.Login = config.Rate{PerSecond: 0.001, Burst: 3}
		c.RateLimits.LoginFailures = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	registerUser(t, s, "alice")
	registerUser(t, s, "bob")
	url := clientURL(s, "/login")
	bad := map[string]any{"type": "m.login.password", "user": "alice", "password": "wrong"}
	expectError(t, do(t, "POST", url, "", bad), 403, "M_FORBIDDEN")
	expectError(t, do(t, "POST", url, "", bad), 403, "M_FORBIDDEN")
	// Two failures used up alice's allowance; the third attempt is refused
	// even with the right password, so guessing stays slow.
	r := do(t, "POST", url, "", map[string]any{"type": "m.login.password", "user": "alice", "password": testPassword})
	expectError(t, r, 429, "M_LIMIT_EXCEEDED")
	if ms, ok := r.Body["retry_after_ms"].(float64); !ok || ms <= 0 {
		t.Fatalf("retry_after_ms = %v", r.Body["retry_after_ms"])
	}
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs <= 0 {
		t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	// The address allowance (3) is used up too, for every account.
	expectError(t, do(t, "POST", url, "", map[string]any{"type": "m.login.password", "user": "bob", "password": testPassword}), 429, "M_LIMIT_EXCEEDED")
}

func TestRegisterRateLimit(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.Register = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	url := clientURL(s, "/register")
	for range 2 {
		if r := do(t, "POST", url, "", map[string]any{}); r.Status != 401 {
			t.Fatalf("register = %d %s", r.Status, r.Raw)
		}
	}
	expectError(t, do(t, "POST", url, "", map[string]any{}), 429, "M_LIMIT_EXCEEDED")
}

func TestRequestBodyLimit(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.MaxRequestBytes = 4096 }))
	alice := registerUser(t, s, "alice")
	big := `{"v":"` + strings.Repeat("x", 5000) + `"}`
	expectError(t, do(t, "PUT", clientURL(s, "/user/@alice:test.veche/account_data/org.example.big"), alice.AccessToken, big), 413, "M_TOO_LARGE")
	expectError(t, do(t, "POST", clientURL(s, "/login"), "", big), 413, "M_TOO_LARGE")
}

func TestSharedSecretRegistration(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) {
		c.Registration.Enabled = false // shared-secret registration works regardless
		c.Registration.SharedSecret = "s3cret"
	}))
	url := s.URL + "/_synapse/admin/v1/register"
	mac := func(nonce, user, pw string, admin bool) string {
		m := hmac.New(sha1.New, []byte("s3cret"))
		role := "notadmin"
		if admin {
			role = "admin"
		}
		m.Write([]byte(nonce + "\x00" + user + "\x00" + pw + "\x00" + role))
		return hex.EncodeToString(m.Sum(nil))
	}
	nonce := do(t, "GET", url, "", nil).Body["nonce"].(string)
	r := do(t, "POST", url, "", map[string]any{"nonce": nonce, "username": "root", "password": testPassword, "admin": true,
		"displayname": "The Admin", "mac": mac(nonce, "root", testPassword, true)})
	if r.Status != 200 || r.Body["user_id"] != "@root:test.veche" || r.Body["access_token"] == nil || r.Body["device_id"] == nil {
		t.Fatalf("shared-secret register = %d %s", r.Status, r.Raw)
	}
	if p := do(t, "GET", clientURL(s, "/profile/@root:test.veche"), "", nil); p.Body["displayname"] != "The Admin" {
		t.Fatalf("profile = %s", p.Raw)
	}
	login(t, s, "root", testPassword)
	// A nonce is single-use.
	expectError(t, do(t, "POST", url, "", map[string]any{"nonce": nonce, "username": "root2", "password": testPassword,
		"mac": mac(nonce, "root2", testPassword, false)}), 400, "M_UNKNOWN")
	nonce = do(t, "GET", url, "", nil).Body["nonce"].(string)
	// The MAC covers the admin flag: flipping it is detected.
	expectError(t, do(t, "POST", url, "", map[string]any{"nonce": nonce, "username": "eve", "password": testPassword, "admin": true,
		"mac": mac(nonce, "eve", testPassword, false)}), 403, "M_FORBIDDEN")

	plain := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.SharedSecret = "" }))
	expectError(t, do(t, "GET", plain.URL+"/_synapse/admin/v1/register", "", nil), 400, "M_UNKNOWN")
}
