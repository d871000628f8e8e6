package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

// runOpts parses args and runs the bench with o adjusted by adjust (for
// what flags cannot carry, such as a pre-opened listener).
func runOpts(t *testing.T, ctx context.Context, args []string, adjust func(*options)) *Report {
	t.Helper()
	var stderr bytes.Buffer
	o, err := parseFlags(args, &stderr)
	if err != nil {
		t.Fatalf("flags: %v\n%s", err, stderr.String())
	}
	if adjust != nil {
		adjust(o)
	}
	rep, err := runBench(ctx, o, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if !rep.OK {
		var out bytes.Buffer
		writeText(&out, rep)
		t.Fatalf("run failed:\n%s\nlog:\n%s", out.String(), stderr.String())
	}
	return rep
}

// TestBigJoin joins a small generated room through the fake resident
// server; the fake's port is opened first so that the Veche under test
// can map the fake's server name to it.
func TestBigJoin(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"12", "11"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) {
				if c.Federation.Hosts == nil {
					c.Federation.Hosts = map[string]string{}
				}
				c.Federation.Hosts["big.bench"] = ln.Addr().String()
				c.Federation.InsecureSkipVerify = true
				c.Federation.AllowPrivateNetworks = true
			}))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep := runOpts(t, ctx, []string{"--url", s.URL, "--users", "1", "--senders", "1", "--scenario", "big-join",
				"--big-members", "50", "--big-state", "100", "--big-room-version", version, "--pid", strconv.Itoa(os.Getpid())},
				func(o *options) { o.fakeListener = ln })
			if len(rep.Scenarios) != 1 {
				t.Fatalf("ran %d scenarios", len(rep.Scenarios))
			}
			r := rep.Scenarios[0]
			for key, want := range map[string]float64{"state_events": 100, "members": 51} {
				if got, _ := r.Figures.Get(key); got != want {
					t.Errorf("%s = %v, want %v", key, got, want)
				}
			}
			for _, key := range []string{"send_join_bytes", "sync_bytes", "join_peak_rss_kib", "after_send_join_seconds"} {
				if got, ok := r.Figures.Get(key); !ok || got <= 0 {
					t.Errorf("%s = %v", key, got)
				}
			}
			if len(r.Latencies) != 2 || r.Latencies[1].Count != 1 {
				t.Errorf("latencies %+v", r.Latencies)
			}
			if rep.Settings.BigMembers != 50 || rep.Settings.BigState != 100 || rep.Settings.BigRoomVersion != version {
				t.Errorf("settings %+v", rep.Settings)
			}
		})
	}
}
