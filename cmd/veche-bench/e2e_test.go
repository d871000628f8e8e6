package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

// TestEndToEnd runs every scenario, small, against a real Veche in this
// process (so --pid is this test's own PID).
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"--url", s.URL, "--users", "3", "--senders", "3", "--rooms", "2", "--messages", "20",
		"--history", "5", "--initial-syncs", "2", "--pid", strconv.Itoa(os.Getpid()), "--json"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if !rep.OK || rep.Server == nil || rep.Server.RSSAfterKiB <= 0 || len(rep.Versions) == 0 {
		t.Errorf("report %+v", rep)
	}
	got := map[string]*Result{}
	for _, r := range rep.Scenarios {
		got[r.Name] = r
		if !r.OK || r.Errors != 0 || len(r.Problems) != 0 || r.Server == nil {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
	// "all" is every scenario that needs one server only.
	want := 0
	for _, sc := range scenarios {
		if !sc.explicit {
			want++
		}
	}
	if len(got) != want || got["federation"] != nil || got["big-join"] != nil {
		t.Fatalf("ran %d scenarios, want %d", len(got), want)
	}
	count := func(scenario, latency string) int {
		for _, l := range got[scenario].Latencies {
			if l.Name == latency {
				return l.Count
			}
		}
		return -1
	}
	for _, c := range []struct {
		scenario, latency string
		want              int
	}{
		{"send-one", "send", 20}, {"send-many", "send", 20}, {"delivery", "delivery", 20},
		{"initial-sync", "initial sync", 2}, {"messages", "page", 1},
	} {
		if n := count(c.scenario, c.latency); n < c.want || (c.scenario != "messages" && n != c.want) {
			t.Errorf("%s: %d %s samples, want %d", c.scenario, n, c.latency, c.want)
		}
	}
	if n, _ := got["messages"].Figures.Get("checked"); n != 20 {
		t.Errorf("messages checked %v, want 20", n)
	}
	if n, _ := got["initial-sync"].Figures.Get("rooms"); n != 2 {
		t.Errorf("initial sync saw %v rooms, want 2", n)
	}
	if lost, _ := got["delivery"].Figures.Get("lost"); lost != 0 {
		t.Errorf("delivery lost %v", lost)
	}
}

// TestSharedSecretAndTextOutput registers through the admin API with
// open registration off, and checks the table's shape.
func TestSharedSecretAndTextOutput(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.Enabled = false }))
	secret := s.Config.Registration.SharedSecret
	if secret == "" {
		t.Fatal("the generated config has no shared secret")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var stdout, stderr bytes.Buffer
	args := []string{"--url", s.URL, "--users", "2", "--senders", "2", "--messages", "5", "--scenario", "send-one"}
	// Without a way to register, the run stops before any scenario.
	if code := run(ctx, args, &stdout, &stderr); code != exitFailed || !strings.Contains(stderr.String(), "--shared-secret") {
		t.Fatalf("closed registration: exit %d, stderr %s", code, stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, append(args, "--shared-secret", secret), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"--shared-secret REDACTED", "shared secret (/_synapse/admin/v1/register)",
		"send-one — ", "measure", "p50", "p99", "\n  send                 5 ", "  ok\n", "all 1 scenarios passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Error("the output shows the shared secret")
	}
}

func TestRegistrationToken(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.Token = "let-me-in" }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"--url", s.URL, "--users", "2", "--senders", "1", "--messages", "3", "--scenario", "send-one", "--json"}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, append(base, "--registration-token", "wrong"), &stdout, &stderr); code != exitFailed {
		t.Errorf("wrong token: exit %d", code)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, append(base, "--registration-token", "let-me-in"), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
}
