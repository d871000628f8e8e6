package clientapi_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

// toDeviceSync is one /sync answer's to-device messages.
type toDeviceSync struct {
	next     string
	messages []map[string]any
}

// syncToDevice calls /sync as cli (since "" for an initial sync).
func syncToDevice(t *testing.T, s *testserver.Server, cli *mautrix.Client, since string, timeout time.Duration) toDeviceSync {
	t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if since != "" {
		q.Set("since", since)
	}
	r := do(t, "GET", clientURL(s, "/sync?"+q.Encode()), cli.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("sync = %d %s", r.Status, r.Raw)
	}
	out := toDeviceSync{next: r.Body["next_batch"].(string)}
	td, _ := r.Body["to_device"].(map[string]any)
	evs, ok := td["events"].([]any)
	if !ok {
		t.Fatalf("to_device.events missing: %s", r.Raw)
	}
	for _, e := range evs {
		out.messages = append(out.messages, e.(map[string]any))
	}
	return out
}

// ns lists the "n" fields of messages' contents.
func ns(msgs []map[string]any) []string {
	var out []string
	for _, m := range msgs {
		c, _ := m["content"].(map[string]any)
		out = append(out, fmt.Sprint(c["n"]))
	}
	return out
}

func expectNs(t *testing.T, who string, got toDeviceSync, want ...string) {
	t.Helper()
	if g := ns(got.messages); strings.Join(g, ",") != strings.Join(want, ",") {
		t.Fatalf("%s got messages %v, want %v", who, g, want)
	}
}

func sendToDevice(t *testing.T, s *testserver.Server, cli *mautrix.Client, typ, txn string, messages map[string]any) {
	t.Helper()
	r := do(t, "PUT", clientURL(s, "/sendToDevice/"+typ+"/"+txn), cli.AccessToken, map[string]any{"messages": messages})
	if r.Status != 200 || string(r.Raw) != "{}" {
		t.Fatalf("sendToDevice = %d %s", r.Status, r.Raw)
	}
}

func TestSendToDevice(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob1 := registerUser(t, s, "bob")
	bob2 := login(t, s, "bob", testPassword)
	// Tokens from before anything was sent.
	start1 := syncToDevice(t, s, bob1, "", 0).next
	start2 := syncToDevice(t, s, bob2, "", 0).next

	// To one device: only that device gets it, with sender and type.
	sendToDevice(t, s, alice, "m.test", "t1", map[string]any{
		"@bob:test.veche":       map[string]any{string(bob1.DeviceID): map[string]any{"n": 1}, "NOSUCHDEVICE": map[string]any{"n": 0}},
		"@nobody:test.veche":    map[string]any{"*": map[string]any{"n": 0}},
		"@carol:remote.example": map[string]any{"*": map[string]any{"n": 0}},
	})
	got := syncToDevice(t, s, bob1, start1, 0)
	expectNs(t, "bob's first device", got, "1")
	if m := got.messages[0]; m["sender"] != "@alice:test.veche" || m["type"] != "m.test" {
		t.Fatalf("message = %v", m)
	}
	expectNs(t, "bob's second device", syncToDevice(t, s, bob2, start2, 0))

	// A retried transaction is not delivered again; the same ID with
	// another event type is another request (another path).
	sendToDevice(t, s, alice, "m.test", "t1", map[string]any{"@bob:test.veche": map[string]any{string(bob1.DeviceID): map[string]any{"n": 1}}})
	sendToDevice(t, s, alice, "m.other", "t1", map[string]any{"@bob:test.veche": map[string]any{string(bob1.DeviceID): map[string]any{"n": 2}}})

	// "*": every device of the user, bob's named device gets its own.
	sendToDevice(t, s, alice, "m.test", "t2", map[string]any{"@bob:test.veche": map[string]any{"*": map[string]any{"n": 3}}})
	sendToDevice(t, s, alice, "m.test", "t3", map[string]any{"@bob:test.veche": map[string]any{
		"*": map[string]any{"n": "all"}, string(bob2.DeviceID): map[string]any{"n": "own"},
	}})

	// Until acknowledged, messages come again (the retry of a lost
	// response), oldest first.
	for range 2 {
		got = syncToDevice(t, s, bob1, start1, 0)
		expectNs(t, "bob's first device", got, "1", "2", "3", "all")
	}
	got2 := syncToDevice(t, s, bob2, start2, 0)
	expectNs(t, "bob's second device", got2, "3", "own")
	if m := got.messages[1]; m["type"] != "m.other" {
		t.Fatalf("second message = %v", m)
	}

	// A sync from the response's token acknowledges them: they are
	// deleted, not just hidden from that token.
	expectNs(t, "bob's first device after acknowledging", syncToDevice(t, s, bob1, got.next, 0))
	expectNs(t, "bob's first device, from the old token", syncToDevice(t, s, bob1, start1, 0))
	expectNs(t, "bob's first device, initial sync", syncToDevice(t, s, bob1, "", 0))
	// The other device's messages are its own.
	expectNs(t, "bob's second device, not yet acknowledged", syncToDevice(t, s, bob2, start2, 0), "3", "own")

	// Messages to oneself reach one's other devices.
	sendToDevice(t, s, bob2, "m.test", "self", map[string]any{"@bob:test.veche": map[string]any{string(bob1.DeviceID): map[string]any{"n": "me"}}})
	got = syncToDevice(t, s, bob1, got.next, 0)
	expectNs(t, "bob's first device", got, "me")
	if got.messages[0]["sender"] != "@bob:test.veche" {
		t.Fatalf("message = %v", got.messages[0])
	}

	// A long-poll wakes for a message.
	done := make(chan toDeviceSync, 1)
	go func() {
		r := do(t, "GET", clientURL(s, "/sync?timeout=30000&since="+url.QueryEscape(got.next)), bob1.AccessToken, nil)
		out := toDeviceSync{}
		if td, ok := r.Body["to_device"].(map[string]any); ok {
			evs, _ := td["events"].([]any)
			for _, e := range evs {
				out.messages = append(out.messages, e.(map[string]any))
			}
		}
		done <- out
	}()
	begin := time.Now()
	sendToDevice(t, s, alice, "m.test", "t4", map[string]any{"@bob:test.veche": map[string]any{string(bob1.DeviceID): map[string]any{"n": "wake"}}})
	woken := <-done
	if time.Since(begin) > 20*time.Second {
		t.Fatal("the long-poll was not woken by the message")
	}
	expectNs(t, "bob's long-poll", woken, "wake")
}

// TestSendToDeviceLimit checks the cap of 100 messages per response and
// that the rest follow, although the stream has not moved past the first
// response's token.
func TestSendToDeviceLimit(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	const total = 105
	var want []string
	for i := range total {
		sendToDevice(t, s, alice, "m.test", fmt.Sprint("t", i), map[string]any{"@bob:test.veche": map[string]any{"*": map[string]any{"n": i}}})
		want = append(want, fmt.Sprint(i))
	}
	first := syncToDevice(t, s, bob, "", 0)
	expectNs(t, "the first response", first, want[:100]...)
	// The long-poll is woken by the position the server takes for the
	// leftovers; a zero timeout would answer empty and leave them to the
	// next sync.
	second := syncToDevice(t, s, bob, first.next, 10*time.Second)
	expectNs(t, "the second response", second, want[100:]...)
	if second.next == first.next {
		t.Fatalf("leftovers came with the token they were written below: %s", second.next)
	}
	// The retry of the second request gets the same (unacknowledged)
	// messages, not a loss.
	expectNs(t, "the second response, retried", syncToDevice(t, s, bob, first.next, 10*time.Second), want[100:]...)
	expectNs(t, "after acknowledging", syncToDevice(t, s, bob, second.next, 0))
	expectNs(t, "an initial sync at the end", syncToDevice(t, s, bob, "", 0))
}

func TestSendToDeviceErrors(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.MaxRequestBytes = 4096 }))
	alice := registerUser(t, s, "alice")
	base := clientURL(s, "/sendToDevice/m.test/")
	tests := []struct {
		name, txn string
		body      any
		token     string
		status    int
		errcode   string
	}{
		{"invalid user ID", "e1", map[string]any{"messages": map[string]any{"bob": map[string]any{"*": map[string]any{}}}}, alice.AccessToken, 400, "M_INVALID_PARAM"},
		{"user ID without a server", "e2", map[string]any{"messages": map[string]any{"@bob": map[string]any{"*": map[string]any{}}}}, alice.AccessToken, 400, "M_INVALID_PARAM"},
		{"no messages", "e3", map[string]any{}, alice.AccessToken, 400, "M_MISSING_PARAM"},
		{"content not an object", "e4", map[string]any{"messages": map[string]any{"@bob:test.veche": map[string]any{"D": "text"}}}, alice.AccessToken, 400, "M_BAD_JSON"},
		{"devices not an object", "e5", map[string]any{"messages": map[string]any{"@bob:test.veche": []any{}}}, alice.AccessToken, 400, "M_BAD_JSON"},
		{"not JSON", "e6", "{nope", alice.AccessToken, 400, "M_NOT_JSON"},
		{"too large", "e7", map[string]any{"messages": map[string]any{"@bob:test.veche": map[string]any{"*": map[string]any{"x": strings.Repeat("x", 5000)}}}}, alice.AccessToken, 413, "M_TOO_LARGE"},
		{"no access token", "e8", map[string]any{"messages": map[string]any{}}, "", 401, "M_MISSING_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectError(t, do(t, "PUT", base+tt.txn, tt.token, tt.body), tt.status, tt.errcode)
		})
	}
	// An empty map of messages is a valid no-op.
	sendToDevice(t, s, alice, "m.test", "ok", map[string]any{})
}

// TestToDeviceAcknowledgedSurviveRestart checks that the stream restarts
// above acknowledged (deleted) messages: a client's token may point at
// one, and a position handed out again would hide whatever got it.
// Federation is off: the federation sender's saved position would cover
// the deleted message's too.
func TestToDeviceAcknowledgedSurviveRestart(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Listen.Federation = "" }))
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	sendToDevice(t, s, alice, "m.test", "t1", map[string]any{"@bob:test.veche": map[string]any{"*": map[string]any{"n": 1}}})
	got := syncToDevice(t, s, bob, "", 0)
	expectNs(t, "bob", got, "1")
	after := syncToDevice(t, s, bob, got.next, 0) // acknowledges: the message is deleted
	expectNs(t, "bob after acknowledging", after)

	s.Restart()
	if err := bob.SetAccountData(ctx, "m.after_restart", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	r := do(t, "GET", clientURL(s, "/sync?timeout=0&since="+url.QueryEscape(after.next)), bob.AccessToken, nil)
	if !strings.Contains(string(r.Raw), "m.after_restart") {
		t.Fatalf("account data written after the restart is missing from a sync from the old token: %s", r.Raw)
	}
}
