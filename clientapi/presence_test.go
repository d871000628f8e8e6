package clientapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

func presenceURL(s *testserver.Server, user id.UserID) string {
	return clientURL(s, "/presence/"+url.PathEscape(string(user))+"/status")
}

// syncPresence is a /sync answer's presence section by sender, and its
// next_batch.
type syncPresence struct {
	next   string
	events map[string]map[string]any
}

func parseSyncPresence(raw []byte) (syncPresence, error) {
	var body struct {
		NextBatch string `json:"next_batch"`
		Presence  struct {
			Events []struct {
				Type    string         `json:"type"`
				Sender  string         `json:"sender"`
				Content map[string]any `json:"content"`
			} `json:"events"`
		} `json:"presence"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return syncPresence{}, err
	}
	out := syncPresence{next: body.NextBatch, events: map[string]map[string]any{}}
	for _, e := range body.Presence.Events {
		if e.Type == "m.presence" {
			out.events[e.Sender] = e.Content
		}
	}
	return out, nil
}

func syncFor(t *testing.T, s *testserver.Server, c *mautrix.Client, query string) syncPresence {
	t.Helper()
	r := do(t, "GET", clientURL(s, "/sync?"+query), c.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("sync ?%s: %d %s", query, r.Status, r.Raw)
	}
	sp, err := parseSyncPresence(r.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func TestPresenceLocal(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice, bob, carol := registerUser(t, s, "alice"), registerUser(t, s, "bob"), registerUser(t, s, "carol")
	sharedRoom(t, alice, bob)

	// Setting: only one's own, with a valid state and a sane message.
	for _, tt := range []struct {
		name    string
		user    id.UserID
		body    any
		status  int
		errcode string
	}{
		{"another user", bob.UserID, map[string]any{"presence": "online"}, 403, "M_FORBIDDEN"},
		{"no presence", alice.UserID, map[string]any{"status_msg": "hi"}, 400, "M_MISSING_PARAM"},
		{"unknown state", alice.UserID, map[string]any{"presence": "busy"}, 400, "M_INVALID_PARAM"},
		{"long message", alice.UserID, map[string]any{"presence": "online", "status_msg": strings.Repeat("x", 1025)}, 400, "M_INVALID_PARAM"},
		{"not JSON", alice.UserID, "{", 400, "M_NOT_JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			expectError(t, do(t, "PUT", presenceURL(s, tt.user), alice.AccessToken, tt.body), tt.status, tt.errcode)
		})
	}
	r := do(t, "PUT", presenceURL(s, alice.UserID), alice.AccessToken, map[string]any{"presence": "unavailable", "status_msg": "in a meeting"})
	if r.Status != 200 || string(r.Raw) != "{}" {
		t.Fatalf("PUT: %d %s", r.Status, r.Raw)
	}

	// Reading: oneself and room mates; strangers get 403, unknown local
	// users 404.
	for _, c := range []*mautrix.Client{alice, bob} {
		r := do(t, "GET", presenceURL(s, alice.UserID), c.AccessToken, nil)
		if r.Status != 200 || r.Body["presence"] != "unavailable" || r.Body["status_msg"] != "in a meeting" || r.Body["currently_active"] != false {
			t.Fatalf("%s reads alice: %d %s", c.UserID, r.Status, r.Raw)
		}
		if ago, ok := r.Body["last_active_ago"].(float64); !ok || ago < 0 || ago > 60000 {
			t.Fatalf("last_active_ago %v", r.Body["last_active_ago"])
		}
	}
	expectError(t, do(t, "GET", presenceURL(s, alice.UserID), carol.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", presenceURL(s, "@nobody:test.veche"), carol.AccessToken, nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", presenceURL(s, "@someone:remote.example"), carol.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", presenceURL(s, "not-a-user"), carol.AccessToken, nil), 400, "M_INVALID_PARAM")
	if r := do(t, "GET", presenceURL(s, carol.UserID), carol.AccessToken, nil); r.Status != 200 || r.Body["presence"] != "offline" {
		t.Fatalf("carol, never seen, reads herself: %d %s", r.Status, r.Raw)
	}

	// Sync: bob's initial sync has alice's presence and his own, which
	// the sync itself made online; carol sees only herself.
	first := syncFor(t, s, bob, "")
	if first.events[string(alice.UserID)]["presence"] != "unavailable" || first.events[string(bob.UserID)]["presence"] != "online" {
		t.Fatalf("bob's initial presence section: %+v", first.events)
	}
	if c := syncFor(t, s, carol, "set_presence=offline"); len(c.events) != 0 {
		t.Fatalf("carol sees %+v", c.events)
	}
	if r := do(t, "GET", presenceURL(s, carol.UserID), carol.AccessToken, nil); r.Body["presence"] != "offline" {
		t.Fatalf("set_presence=offline made carol %s", r.Body["presence"])
	}
	if c := syncFor(t, s, carol, "set_presence=unavailable"); c.events[string(carol.UserID)]["presence"] != "unavailable" {
		t.Fatalf("carol after set_presence=unavailable: %+v", c.events)
	}
	expectError(t, do(t, "GET", clientURL(s, "/sync?set_presence=away"), carol.AccessToken, nil), 400, "M_INVALID_PARAM")

	// A long-poll of bob wakes when alice comes back.
	got := make(chan syncPresence, 1)
	errs := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", clientURL(s, "/sync?timeout=20000&since="+first.next), nil)
		req.Header.Set("Authorization", "Bearer "+bob.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			errs <- err
			return
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		sp, err := parseSyncPresence(raw)
		if err != nil {
			errs <- err
			return
		}
		got <- sp
	}()
	if r := do(t, "PUT", presenceURL(s, alice.UserID), alice.AccessToken, map[string]any{"presence": "online"}); r.Status != 200 {
		t.Fatalf("PUT online: %d %s", r.Status, r.Raw)
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	case sp := <-got:
		c := sp.events[string(alice.UserID)]
		if c["presence"] != "online" || c["currently_active"] != true || c["status_msg"] != nil {
			t.Fatalf("bob's incremental presence: %+v", sp.events)
		}
		if _, ok := sp.events[string(bob.UserID)]; ok {
			t.Fatal("bob's own unchanged presence came again")
		}
	}

	// The presence filter and ignoring apply.
	filtered := syncFor(t, s, bob, "filter="+url.QueryEscape(`{"presence":{"not_senders":["`+string(alice.UserID)+`"]}}`))
	if _, ok := filtered.events[string(alice.UserID)]; ok || len(filtered.events) != 1 {
		t.Fatalf("filtered: %+v", filtered.events)
	}
	if r := do(t, "PUT", clientURL(s, "/user/"+url.PathEscape(string(bob.UserID))+"/account_data/m.ignored_user_list"), bob.AccessToken,
		map[string]any{"ignored_users": map[string]any{string(alice.UserID): map[string]any{}}}); r.Status != 200 {
		t.Fatalf("ignoring: %d %s", r.Status, r.Raw)
	}
	if ignored := syncFor(t, s, bob, ""); len(ignored.events) != 1 {
		t.Fatalf("with alice ignored: %+v", ignored.events)
	}
}

func TestPresenceDisabled(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Presence.Enabled = false }))
	alice, bob := registerUser(t, s, "alice"), registerUser(t, s, "bob")
	sharedRoom(t, alice, bob)
	if r := do(t, "PUT", presenceURL(s, alice.UserID), alice.AccessToken, map[string]any{"presence": "online", "status_msg": "hi"}); r.Status != 200 {
		t.Fatalf("PUT: %d %s", r.Status, r.Raw)
	}
	expectError(t, do(t, "PUT", presenceURL(s, alice.UserID), alice.AccessToken, map[string]any{"presence": "busy"}), 400, "M_INVALID_PARAM")
	if r := do(t, "GET", presenceURL(s, alice.UserID), bob.AccessToken, nil); r.Status != 200 || r.Body["presence"] != "offline" || r.Body["status_msg"] != nil {
		t.Fatalf("GET: %d %s", r.Status, r.Raw)
	}
	if sp := syncFor(t, s, bob, ""); len(sp.events) != 0 {
		t.Fatalf("sync carries presence: %+v", sp.events)
	}
}
