package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
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
	if testing.Verbose() {
		var out bytes.Buffer
		writeText(&out, rep)
		t.Logf("report:\n%s", out.String())
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

// TestFederationScenario runs the federation scenario between two Veche
// servers in this process.
func TestFederationScenario(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid := strconv.Itoa(os.Getpid())
	rep := runOpts(t, ctx, []string{"--url", servers[0].URL, "--url2", servers[1].URL, "--scenario", "federation",
		"--users", "3", "--senders", "3", "--messages", "30", "--pid", pid, "--pid2", pid},
		// A short timeline makes limited answers, and gap filling, likely.
		func(o *options) { o.burstTimelineLimit = 3 })
	if len(rep.Scenarios) != 1 || rep.URL2 != servers[1].URL {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Scenarios[0]
	counts := map[string]int{}
	for _, l := range r.Latencies {
		counts[l.Name] = l.Count
	}
	for name, want := range map[string]int{
		"remote join": 3, "delivery 1→2": 30, "delivery 2→1": 30, "burst 1→2": 15, "burst 2→1": 15, "burst send": 30,
	} {
		if counts[name] != want {
			t.Errorf("%s: %d samples, want %d (all: %v)", name, counts[name], want, counts)
		}
	}
	for _, key := range []string{"lost_1_2", "lost_2_1", "burst_lost_1_2", "burst_lost_2_1"} {
		if v, ok := r.Figures.Get(key); !ok || v != 0 {
			t.Errorf("%s = %v, %v", key, v, ok)
		}
	}
	if v, _ := r.Figures.Get("burst_delivered_per_second"); v <= 0 {
		t.Errorf("burst_delivered_per_second = %v", v)
	}
	if r.Server == nil || r.Server2 == nil {
		t.Errorf("no server usage: %+v %+v", r.Server, r.Server2)
	}
	l1, _ := r.Figures.Get("limited_1")
	l2, _ := r.Figures.Get("limited_2")
	t.Logf("limited timelines: %v on 1, %v on 2", l1, l2)
}

// TestBurstReceiverFillsGapsAndChecksOrder checks the receiver's
// bookkeeping: a gap is filled back to the events from before the burst
// with only unseen events; /sync timelines are checked for repeated
// messages and for messages out of their sender's order, gaps are not.
func TestBurstReceiverFillsGapsAndChecksOrder(t *testing.T) {
	msg := func(id, body string) event {
		e := event{EventID: id, Type: "m.room.message"}
		e.Content.Body = body
		return e
	}
	pages := map[string]messagesResponse{
		"t3": {Chunk: []event{msg("$5", "P2-1/1"), msg("$4", "P2-0/1")}, End: "t2"},
		// $7 was seen already, though /messages orders it before the gap.
		"t2": {Chunk: []event{msg("$3", "P2-0/0"), msg("$7", "P2-1/2"), msg("$2", "own message"), msg("$1", "old")}, End: "t1"},
	}
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from := r.URL.Query().Get("from")
		asked = append(asked, from)
		if r.URL.Query().Get("dir") != "b" || !strings.HasSuffix(r.URL.Path, "/messages") {
			w.WriteHeader(400)
			return
		}
		_ = json.NewEncoder(w).Encode(pages[from])
	}))
	defer srv.Close()
	s := &side{label: "1", c: newClient(srv.URL, "run", 2, 5*time.Second), users: []*user{{ID: "@r:one", Token: "t"}}}
	rc := &burstReceiver{
		s: s, other: &side{label: "2"}, roomID: "!r", prefix: "P2-",
		arrived: map[string]time.Time{}, lastSeq: map[int]int{}, inSync: map[string]bool{},
		seenIDs: map[string]bool{"$1": true}, preBurst: map[string]bool{"$1": true}, progress: make(chan struct{}, 1),
	}
	now := time.Now()
	rc.take([]event{msg("$7", "P2-1/2")}, now, false)
	gap, err := rc.fillGap(context.Background(), "t3")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range gap {
		ids = append(ids, e.EventID)
	}
	if got := strings.Join(ids, ","); got != "$2,$3,$4,$5" || strings.Join(asked, ",") != "t3,t2" {
		t.Fatalf("gap %s after asking %v", got, asked)
	}
	rc.take(gap, now, true)
	if len(rc.arrived) != 4 || len(rc.dups)+len(rc.disorder) != 0 {
		t.Fatalf("arrived %v, dups %v, disorder %v", rc.arrived, rc.dups, rc.disorder)
	}
	// A gap's message listed by a later timeline is no repetition, but
	// a timeline's message listed again is; so is a sender's message 0
	// after its message 2 in timelines.
	rc.take([]event{msg("$4", "P2-0/1"), msg("$7", "P2-1/2"), msg("$8", "P2-1/0")}, now, false)
	if len(rc.dups) != 1 || rc.dups[0] != "$7" {
		t.Errorf("dups %v", rc.dups)
	}
	if len(rc.disorder) != 1 || !strings.Contains(rc.disorder[0], "$8") {
		t.Errorf("disorder %v", rc.disorder)
	}
	select {
	case <-rc.progress:
	default:
		t.Error("no progress signalled")
	}
}

// A message the other server never showed fails the run, naming it.
func TestBurstJudgeReportsLoss(t *testing.T) {
	start := time.Now()
	rc := &burstReceiver{
		s: &side{label: "2", server: "b.test"}, other: &side{label: "1", server: "a.test"},
		arrived: map[string]time.Time{"B1-0/0": start.Add(time.Second), "B1-0/1": start.Add(2 * time.Second)},
	}
	sent := map[string]burstMessage{
		"B1-0/0": {eventID: "$a", start: start}, "B1-0/1": {eventID: "$b", start: start},
		"B1-1/0": {eventID: "$lost", start: start}, "B2-0/0": {eventID: "$other-way", start: start},
	}
	var tl tally
	d := rc.judge(sent, "B1-", &tl)
	if d.sent != 3 || d.lost != 1 || len(d.latency) != 2 || !d.last.Equal(start.Add(2*time.Second)) {
		t.Errorf("judged %+v", d)
	}
	if len(tl.problems) != 1 || !strings.Contains(tl.problems[0], "LOST: 1 of 3 burst messages sent on a.test never reached b.test, e.g. $lost") {
		t.Errorf("problems %q", tl.problems)
	}
}
