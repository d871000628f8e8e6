package federation_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// signingKeyOf reads a test server's signing key from its file.
func signingKeyOf(t *testing.T, s *testserver.Server) signingkey.Key {
	t.Helper()
	k, err := signingkey.Load(s.Config.Path(s.Config.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fedRequest describes a hand-made federation request.
type fedRequest struct {
	method, uri string
	// signed: origin and destination in the signed JSON and the header.
	origin, destination spec.ServerName
	keyID               gomatrixserverlib.KeyID
	key                 ed25519.PrivateKey
	content             any
	// sendURI, when set, is the URI actually requested (tampering).
	sendURI string
	// body, when set, replaces the JSON of content on the wire.
	body []byte
	// header, when set, replaces the Authorization header; "SIG" in it
	// stands for the signature.
	header *string
}

type fedResponse struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r fedResponse) errcode() string { s, _ := r.body["errcode"].(string); return s }

// send signs r (unless told otherwise) and sends it to s's federation
// listener.
func send(t *testing.T, s *testserver.Server, r fedRequest) fedResponse {
	t.Helper()
	fr := fclient.NewFederationRequest(r.method, r.origin, r.destination, r.uri)
	if r.content != nil {
		if err := fr.SetContent(r.content); err != nil {
			t.Fatal(err)
		}
	}
	if r.key != nil {
		if err := fr.Sign(r.origin, r.keyID, r.key); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	uri := r.uri
	if r.sendURI != "" {
		uri = r.sendURI
	}
	body := fr.Content()
	if r.body != nil {
		body = r.body
	}
	req, err := http.NewRequest(r.method, "https://"+s.Config.Listen.Federation+uri, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = signed.Header.Clone()
	if r.header != nil {
		_, _, _, _, sig := fclient.ParseAuthorization(signed.Header.Get("Authorization"))
		req.Header.Set("Authorization", strings.ReplaceAll(*r.header, "SIG", sig))
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 20 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := fedResponse{status: resp.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

func strPtr(s string) *string { return &s }

func TestInboundAuthentication(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test", "c.test"}, testserver.WithConfig(func(c *config.Config) {
		if c.ServerName == "b.test" {
			c.Federation.DenyServers = []string{"c.test"}
			c.Federation.MaxRequestBytes = 64 << 10
			// A name that resolves to a closed port: its keys cannot be had.
			c.Federation.Hosts["dead.test"] = "127.0.0.1:1"
		}
	}))
	a, b, c := servers[0], servers[1], servers[2]
	createUser(t, b, "bob", "Bob")
	aKey, cKey := signingKeyOf(t, a), signingKeyOf(t, c)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	const profile = "/_matrix/federation/v1/query/profile?user_id=%40bob%3Ab.test"
	ok := fedRequest{method: "GET", uri: profile, origin: "a.test", destination: "b.test", keyID: aKey.ID, key: aKey.PrivateKey}

	if r := send(t, b, ok); r.status != 200 || r.body["displayname"] != "Bob" {
		t.Fatalf("valid request: %d %s", r.status, r.raw)
	}

	// The header as the spec allows it, not as gomatrixserverlib writes it.
	loose := ok
	loose.header = strPtr(`x-matrix  Key=` + string(aKey.ID) + ` ,origin=a.test,	DESTINATION="b.test", sig="SIG"`)
	if r := send(t, b, loose); r.status != 200 {
		t.Fatalf("spec-shaped header: %d %s", r.status, r.raw)
	}

	big := strings.Repeat("x", 100<<10)
	tests := []struct {
		name    string
		edit    func(r *fedRequest)
		status  int
		errcode string
	}{
		{"no Authorization", func(r *fedRequest) { r.key = nil }, 401, "M_UNAUTHORIZED"},
		{"bearer token", func(r *fedRequest) { r.header = strPtr("Bearer abc") }, 401, "M_UNAUTHORIZED"},
		{"garbled header", func(r *fedRequest) { r.header = strPtr("X-Matrix garbage") }, 401, "M_UNAUTHORIZED"},
		{"no signature", func(r *fedRequest) {
			r.header = strPtr(`X-Matrix origin="a.test",destination="b.test",key="` + string(aKey.ID) + `"`)
		}, 401, "M_UNAUTHORIZED"},
		{"invalid origin", func(r *fedRequest) {
			r.header = strPtr(`X-Matrix origin="a b",destination="b.test",key="ed25519:x",sig="abc"`)
		}, 401, "M_UNAUTHORIZED"},
		{"wrong destination", func(r *fedRequest) { r.destination = "c.test" }, 401, "M_UNAUTHORIZED"},
		{"bad signature", func(r *fedRequest) { r.key = otherKey }, 401, "M_UNAUTHORIZED"},
		{"unknown key ID", func(r *fedRequest) { r.keyID = "ed25519:nope" }, 401, "M_UNAUTHORIZED"},
		{"origin keys unreachable", func(r *fedRequest) { r.origin = "dead.test"; r.key = otherKey }, 401, "M_UNAUTHORIZED"},
		{"tampered URI", func(r *fedRequest) { r.sendURI = "/_matrix/federation/v1/query/profile?user_id=%40eve%3Ab.test" }, 401, "M_UNAUTHORIZED"},
		{"tampered body", func(r *fedRequest) { r.content = map[string]int{"a": 1}; r.body = []byte(`{"a":2}`) }, 401, "M_UNAUTHORIZED"},
		{"body not JSON", func(r *fedRequest) { r.content = map[string]int{"a": 1}; r.body = []byte(`{"a":`) }, 400, "M_NOT_JSON"},
		{"oversized body", func(r *fedRequest) { r.content = map[string]string{"x": big} }, 413, "M_TOO_LARGE"},
		{"denied origin", func(r *fedRequest) { r.origin, r.keyID, r.key = "c.test", cKey.ID, cKey.PrivateKey }, 403, "M_FORBIDDEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ok
			tt.edit(&r)
			got := send(t, b, r)
			if got.status != tt.status || got.errcode() != tt.errcode {
				t.Errorf("got %d %s, want %d %s", got.status, got.raw, tt.status, tt.errcode)
			}
			if _, ok := got.body["error"].(string); !ok {
				t.Errorf("no error message in %s", got.raw)
			}
		})
	}
}

func TestInboundRateLimit(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"}, testserver.WithConfig(func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.Federation.RateLimit = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	a, b := servers[0], servers[1]
	createUser(t, b, "bob", "Bob")
	key := signingKeyOf(t, a)
	req := fedRequest{method: "GET", uri: "/_matrix/federation/v1/query/profile?user_id=%40bob%3Ab.test", origin: "a.test", destination: "b.test", keyID: key.ID, key: key.PrivateKey}
	for i := 0; i < 2; i++ {
		if r := send(t, b, req); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
	}
	r := send(t, b, req)
	if r.status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("third request: %d %s, want 429 M_LIMIT_EXCEEDED", r.status, r.raw)
	}
	if ms, _ := r.body["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms = %v", r.body["retry_after_ms"])
	}
	// Unauthenticated endpoints are not counted against an origin.
	if status, _ := rawGet(t, b, "/_matrix/federation/v1/version"); status != 200 {
		t.Errorf("version: %d", status)
	}
}
