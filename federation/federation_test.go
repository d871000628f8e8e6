package federation_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/internal/version"
)

var ctx = context.Background()

// createUser makes a local account directly (no HTTP needed).
func createUser(t *testing.T, s *testserver.Server, localpart, displayName string) {
	t.Helper()
	if _, err := s.Accounts().Create(ctx, accounts.NewAccount{Localpart: localpart, DisplayName: displayName}, nil); err != nil {
		t.Fatal(err)
	}
}

// httpErr extracts the status and errcode of a federation client error.
func httpErr(t *testing.T, err error) (int, string) {
	t.Helper()
	var he gomatrix.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("error %v (%T) is not an HTTP error", err, err)
	}
	var body struct {
		ErrCode string `json:"errcode"`
	}
	var re gomatrix.RespError
	if errors.As(he.WrappedError, &re) {
		body.ErrCode = re.ErrCode
	} else {
		_ = json.Unmarshal(he.Contents, &body)
	}
	return he.Code, body.ErrCode
}

func TestVersionAndProfile(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	createUser(t, b, "bob", "Bob")

	var v fclient.Version
	req, _ := http.NewRequest("GET", "matrix://b.test/_matrix/federation/v1/version", nil)
	if err := a.Federation().Client().DoRequestAndParseResponse(ctx, req, &v); err != nil {
		t.Fatal(err)
	}
	if v.Server.Name != "Veche" || v.Server.Version != version.Version {
		t.Errorf("version = %+v", v)
	}

	cl := a.Federation().Client()
	prof, err := cl.LookupProfile(ctx, "a.test", "b.test", "@bob:b.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if prof.DisplayName != "Bob" {
		t.Errorf("profile = %+v", prof)
	}
	prof, err = cl.LookupProfile(ctx, "a.test", "b.test", "@bob:b.test", "displayname")
	if err != nil || prof.DisplayName != "Bob" {
		t.Errorf("displayname = %+v, %v", prof, err)
	}

	tests := []struct {
		name, userID, field string
		status              int
		errcode             string
	}{
		{"unknown user", "@nobody:b.test", "", 404, "M_NOT_FOUND"},
		{"unset field", "@bob:b.test", "avatar_url", 404, "M_NOT_FOUND"},
		{"remote user", "@bob:a.test", "", 400, "M_INVALID_PARAM"},
		{"not a user ID", "bob", "", 400, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cl.LookupProfile(ctx, "a.test", "b.test", tt.userID, tt.field)
			if err == nil {
				t.Fatal("lookup succeeded")
			}
			if status, code := httpErr(t, err); status != tt.status || code != tt.errcode {
				t.Errorf("got %d %s, want %d %s", status, code, tt.status, tt.errcode)
			}
		})
	}
}

// rawGet fetches a federation URL of s without any authentication.
func rawGet(t *testing.T, s *testserver.Server, path string) (int, []byte) {
	t.Helper()
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	resp, err := cl.Get("https://" + s.Config.Listen.Federation + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestUnknownEndpoint(t *testing.T) {
	t.Parallel()
	s := testserver.StartFederation(t, []string{"a.test"})[0]
	for _, p := range []string{"/_matrix/federation/v1/nope", "/_matrix/key/v2/nope", "/elsewhere"} {
		status, body := rawGet(t, s, p)
		if status != 404 || !strings.Contains(string(body), "M_UNRECOGNIZED") {
			t.Errorf("GET %s = %d %s", p, status, body)
		}
	}
}

// Restart keeps the federation port, so the other servers' hosts entries
// stay right.
func TestRestartKeepsFederationPort(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	createUser(t, b, "bob", "Bob")
	addr := b.FederationAddr().String()
	b.Restart()
	if got := b.FederationAddr().String(); got != addr {
		t.Fatalf("federation address %s after restart, was %s", got, addr)
	}
	if _, err := a.Federation().Client().LookupProfile(ctx, "a.test", "b.test", "@bob:b.test", ""); err != nil {
		t.Fatalf("A reaching B after B's restart: %v", err)
	}
}
