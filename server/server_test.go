package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

func get(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func post(t testing.TB, url, token string, body any) map[string]any {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(data))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return out
}

// register creates a user through the dummy flow and returns its token.
func register(t testing.TB, s *testserver.Server, username string) string {
	t.Helper()
	url := s.URL + "/_matrix/client/v3/register"
	first := post(t, url, "", map[string]any{"username": username, "password": "password123"})
	done := post(t, url, "", map[string]any{"username": username, "password": "password123",
		"auth": map[string]any{"type": "m.login.dummy", "session": first["session"]}})
	tok, _ := done["access_token"].(string)
	if tok == "" {
		t.Fatalf("registering %s: %v", username, done)
	}
	return tok
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Listen.Metrics = "127.0.0.1:0" }))
	tok := register(t, s, "alice")
	get(t, s.URL+"/_matrix/client/v3/account/whoami", tok)
	get(t, s.URL+"/_matrix/client/v3/nope", "")

	if code, body := get(t, s.URL+"/health", ""); code != 200 || body != "OK" {
		t.Fatalf("client health = %d %q", code, body)
	}
	metricsURL := "http://" + s.MetricsAddr().String()
	if code, body := get(t, metricsURL+"/health", ""); code != 200 || body != "OK" {
		t.Fatalf("metrics health = %d %q", code, body)
	}
	code, body := get(t, metricsURL+"/metrics", "")
	if code != 200 {
		t.Fatalf("metrics = %d", code)
	}
	for _, want := range []string{
		`veche_http_requests_total{code="200",component="client",method="GET",route="GET /_matrix/client/v3/account/whoami"} 1`,
		`veche_http_requests_total{code="404",component="client",method="GET",route="unmatched"} 1`,
		`veche_http_request_duration_seconds_bucket{component="client",method="POST",route="POST /_matrix/client/v3/register"`,
		`go_sql_open_connections{db_name="`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Metrics stay off the client listener.
	if code, _ := get(t, s.URL+"/metrics", ""); code != 404 {
		t.Fatalf("client listener serves /metrics: %d", code)
	}
}

func TestRestartKeepsAccountsAndData(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	tok := register(t, s, "alice")
	put, _ := http.NewRequest("PUT", s.URL+"/_matrix/client/v3/user/@alice:test.veche/account_data/org.example.k", strings.NewReader(`{"kept":true}`))
	put.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(put)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("put account data: %v %v", res, err)
	}
	res.Body.Close()

	s.Restart()

	if code, body := get(t, s.URL+"/_matrix/client/v3/account/whoami", tok); code != 200 || !strings.Contains(body, "@alice:test.veche") {
		t.Fatalf("token after restart: %d %s", code, body)
	}
	if code, body := get(t, s.URL+"/_matrix/client/v3/user/@alice:test.veche/account_data/org.example.k", tok); code != 200 || body != `{"kept":true}` {
		t.Fatalf("account data after restart: %d %s", code, body)
	}
	login := post(t, s.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password123"})
	if login["access_token"] == nil {
		t.Fatalf("login after restart: %v", login)
	}
}

// syncBuffer is an io.Writer safe for the server's concurrent logging.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLogsCarryRequestIDsButNoTokens(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.JSONFormatter{})
	s := testserver.Start(t, func(setup *testserver.Setup) { setup.Log = l })
	tok := register(t, s, "alice")
	get(t, s.URL+"/_matrix/client/v3/account/whoami", tok)
	get(t, s.URL+"/_matrix/client/v3/account/whoami?access_token="+tok, "")
	login := post(t, s.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password123"})

	out := logs.String()
	for _, secret := range []string{tok, login["access_token"].(string), "password123"} {
		if strings.Contains(out, secret) {
			t.Fatalf("a secret appears in the logs:\n%s", out)
		}
	}
	var sawAccess bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if entry["msg"] == "Request handled" {
			sawAccess = true
			if entry["request_id"] == nil || entry["status"] == nil || entry["method"] == nil {
				t.Fatalf("access log lacks fields: %v", entry)
			}
			if entry["path"] == "/_matrix/client/v3/account/whoami" && entry["user_id"] != "@alice:test.veche" {
				t.Fatalf("authenticated request logged without user_id: %v", entry)
			}
		}
	}
	if !sawAccess {
		t.Fatal("no access log lines")
	}
}

func TestShutdownIsIdempotent(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	if _, err := http.Get(s.URL + "/_matrix/client/versions"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}
