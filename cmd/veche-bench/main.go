// Command veche-bench drives a running Matrix homeserver over the client
// API like many clients at once and reports throughput and latency. It
// speaks only the spec (plus Synapse's shared-secret registration), so the
// same run can be pointed at Veche, Synapse or any other homeserver for
// comparison.
//
//	veche-bench --url http://127.0.0.1:8008 --pid $(pidof veche) --messages 2000 --senders 8 --rooms 50
//
// Scenarios (--scenario, comma-separated, default all):
//
//	send-one      one user sends --messages messages in sequence into one room
//	send-many     --senders users send --messages messages in all, concurrently, into one room
//	delivery      time from starting a send until a long-polling /sync of another user has it
//	initial-sync  initial /sync of a fresh user in --rooms rooms with --history messages each
//	messages      backwards /messages over a room filled by --senders concurrent users,
//	              checking that every message comes back once and in causal order
//
// Two more run only when named, as they need a second server:
//
//	federation    one public room on two federating servers (--url and --url2):
//	              --senders users on each join it (those of --url2 over federation),
//	              then delivery latency one message at a time, --messages each way,
//	              then a burst of --messages in all from every sender on both sides
//	              at once, until each message is visible in a long-polling /sync on
//	              the other server; lost, repeated or (per sender) reordered
//	              messages fail the run
//	big-join      joining a remote room with --big-members members and --big-state
//	              state events in all: veche-bench itself plays the resident server
//	              (--fake-server-name, TLS on --fake-listen, its own signing key and
//	              a room generated at start), and reports the join's wall time, when
//	              the room showed up in the user's /sync, and the server's memory
//
// Users are created with open registration (m.login.dummy), a
// registration token (--registration-token) or the shared-secret admin API
// (--shared-secret), named after --prefix (random by default, so runs
// never collide); the second server uses --registration-token2 and
// --shared-secret2, or else the same. With --pid (and --pid2 for the
// second server) the server's VmRSS, VmHWM and CPU time are read from
// /proc around each scenario; big-join resets VmHWM before the join (when
// it may: the server runs as the same user) so that the peak is the
// join's. --json prints one JSON object.
//
// Running federation against two Veche servers on one machine: each maps
// the other's server name to its federation listener and accepts the
// other's self-signed certificate on loopback. --set is given at every
// start (it is not written to the config); a dotted server name in a
// federation.hosts key is fine.
//
//	mkdir a b
//	(cd a && veche --server-name a.test --listen-client 127.0.0.1:18008 --listen-federation 127.0.0.1:18448 \
//	  --set registration.enabled=true --set rate_limits.enabled=false \
//	  --set federation.hosts.b.test=127.0.0.1:28448 \
//	  --set federation.insecure_skip_verify=true --set federation.allow_private_networks=true &)
//	(cd b && veche --server-name b.test --listen-client 127.0.0.1:28008 --listen-federation 127.0.0.1:28448 \
//	  --set registration.enabled=true --set rate_limits.enabled=false \
//	  --set federation.hosts.a.test=127.0.0.1:18448 \
//	  --set federation.insecure_skip_verify=true --set federation.allow_private_networks=true &)
//	veche-bench --url http://127.0.0.1:18008 --url2 http://127.0.0.1:28008 \
//	  --pid $(pgrep -f 'listen-client 127.0.0.1:18008') --pid2 $(pgrep -f 'listen-client 127.0.0.1:28008') \
//	  --scenario federation --senders 8 --messages 2000
//
// Running big-join: the server under test must send big.bench's traffic
// to the fake server's listener, accept its self-signed certificate and
// reach loopback. The fake listens on --fake-listen (default
// 127.0.0.1:8449; fixed, because the server reads federation.hosts at
// start) and prints the address; start the server first, then the bench:
//
//	mkdir c && cd c
//	veche --server-name c.test --set registration.enabled=true --set rate_limits.enabled=false \
//	  --set federation.hosts.big.bench=127.0.0.1:8449 \
//	  --set federation.insecure_skip_verify=true --set federation.allow_private_networks=true &
//	veche-bench --url http://127.0.0.1:8008 --pid $! --scenario big-join --users 1 --senders 1 \
//	  --big-members 10000 --big-state 20000 --timeout 600s
//
// (The server needs a federation listener, listen.federation, to federate
// at all; generated configs have one on 127.0.0.1:8448.) The fake server
// answers its key, make_join, send_join (the generated state and auth
// chain), transactions (accepted, dropped), /event, /state and /state_ids
// at the join, and empty get_missing_events and backfill; it checks no
// signatures of what it receives. Generating 20,000 signed events takes a
// few seconds before the join starts; it is reported, not measured.
//
// The exit status is 0 when every scenario passed, 1 when a request
// failed, a check failed or the run could not start, 2 for bad flags.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes: a run whose scenarios failed is told apart from one that
// was asked for wrongly.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

type options struct {
	url               string
	users             int
	rooms             int
	senders           int
	messages          int
	history           int
	initialSyncs      int
	registrationToken string
	sharedSecret      string
	pid               int
	json              bool
	prefix            string
	scenarios         []string
	timeout           time.Duration

	// federation
	url2               string
	pid2               int
	registrationToken2 string
	sharedSecret2      string

	// big-join
	fakeServerName string
	fakeListen     string
	bigMembers     int
	bigState       int
	bigRoomVersion string
	// burstTimelineLimit is the federation burst receivers' timeline
	// limit; tests lower it to force limited timelines and the gap
	// filling that follows.
	burstTimelineLimit int
	// fakeListener, when set (tests), is used instead of --fake-listen,
	// so that the port is known before the server under test starts.
	fakeListener net.Listener
}

// localpartRE is the spec's user ID localpart grammar; the prefix becomes
// part of every user name.
var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{burstTimelineLimit: burstTimelineLimit}
	fs := flag.NewFlagSet("veche-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "", "client API base URL of the homeserver, e.g. http://127.0.0.1:8008 (required)")
	fs.IntVar(&o.users, "users", 10, "accounts to create; all join the rooms of send-one, send-many and delivery (raised to --senders if lower)")
	fs.IntVar(&o.rooms, "rooms", 50, "rooms of the initial-sync user")
	fs.IntVar(&o.senders, "senders", 8, "concurrent senders (distinct users)")
	fs.IntVar(&o.messages, "messages", 1000, "messages per scenario")
	fs.IntVar(&o.history, "history", 20, "messages of history in each initial-sync room")
	fs.IntVar(&o.initialSyncs, "initial-syncs", 5, "how many times initial-sync repeats the initial /sync")
	fs.StringVar(&o.registrationToken, "registration-token", "", "register with m.login.registration_token and this token")
	fs.StringVar(&o.sharedSecret, "shared-secret", "", "register with the Synapse-compatible /_synapse/admin/v1/register and this shared secret")
	fs.IntVar(&o.pid, "pid", 0, "PID of the server process, to report its memory (VmRSS, VmHWM) and CPU time from /proc")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON")
	fs.StringVar(&o.prefix, "prefix", "", "user name prefix (default: a random run ID, so that runs do not collide)")
	scen := fs.String("scenario", "all", "comma-separated scenarios: "+strings.Join(scenarioNames(), ", ")+", or all")
	fs.DurationVar(&o.timeout, "timeout", 90*time.Second, "timeout of each HTTP request (must exceed the 30 s long-poll)")
	fs.StringVar(&o.url2, "url2", "", "client API base URL of a second homeserver federating with the first (federation scenario)")
	fs.IntVar(&o.pid2, "pid2", 0, "PID of the second server's process (federation scenario)")
	fs.StringVar(&o.registrationToken2, "registration-token2", "", "registration token of the second server (default: --registration-token)")
	fs.StringVar(&o.sharedSecret2, "shared-secret2", "", "shared secret of the second server (default: --shared-secret)")
	fs.StringVar(&o.fakeServerName, "fake-server-name", "big.bench", "server name of big-join's fake resident server")
	fs.StringVar(&o.fakeListen, "fake-listen", "127.0.0.1:8449", "address of big-join's fake server's TLS federation listener; map --fake-server-name to it in the server's federation.hosts")
	fs.IntVar(&o.bigMembers, "big-members", 10000, "joined members of big-join's room")
	fs.IntVar(&o.bigState, "big-state", 20000, "state events of big-join's room in all (members included; custom state fills the rest)")
	fs.StringVar(&o.bigRoomVersion, "big-room-version", "12", "room version of big-join's room")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: veche-bench --url URL [flags]\n\nLoad-tests a running Matrix homeserver through its client API.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if u, err := url.Parse(o.url); o.url == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("--url must be the http(s) base URL of the client API, e.g. http://127.0.0.1:8008")
	}
	for name, v := range map[string]int{"--users": o.users, "--rooms": o.rooms, "--senders": o.senders, "--messages": o.messages, "--initial-syncs": o.initialSyncs, "--big-members": o.bigMembers} {
		if v < 1 {
			return nil, fmt.Errorf("%s must be at least 1", name)
		}
	}
	if o.history < 0 || o.pid < 0 || o.pid2 < 0 || o.bigState < 0 {
		return nil, errors.New("--history, --pid, --pid2 and --big-state must not be negative")
	}
	if o.timeout <= syncTimeoutMS*time.Millisecond {
		return nil, fmt.Errorf("--timeout must exceed the %d ms long-poll", syncTimeoutMS)
	}
	// Two users at least: delivery needs a sender and a receiver.
	o.users = max(o.users, o.senders, 2)
	if o.prefix == "" {
		o.prefix = "bench" + randomHex(4)
	}
	if !localpartRE.MatchString(o.prefix) || len(o.prefix) > 100 {
		return nil, errors.New("--prefix may only contain a-z, 0-9 and ._=/+-")
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			for _, sc := range scenarios {
				if !sc.explicit {
					o.scenarios = append(o.scenarios, sc.name)
				}
			}
		case slices.Contains(scenarioNames(), s):
			o.scenarios = append(o.scenarios, s)
		default:
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", s, strings.Join(scenarioNames(), ", "))
		}
	}
	slices.Sort(o.scenarios)
	o.scenarios = slices.Compact(o.scenarios)
	// Run in the documented order, whatever order they were named in.
	o.scenarios = slices.DeleteFunc(scenarioNames(), func(s string) bool { return !slices.Contains(o.scenarios, s) })
	if slices.Contains(o.scenarios, "federation") {
		if u, err := url.Parse(o.url2); o.url2 == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("the federation scenario needs --url2, the client API base URL of a second server")
		}
	}
	if slices.Contains(o.scenarios, "big-join") {
		if _, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(o.bigRoomVersion)); err != nil {
			return nil, fmt.Errorf("--big-room-version: %w", err)
		}
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(o.fakeServerName)); !ok {
			return nil, fmt.Errorf("--fake-server-name %q is not a server name", o.fakeServerName)
		}
	}
	if o.registrationToken2 == "" {
		o.registrationToken2 = o.registrationToken
	}
	if o.sharedSecret2 == "" {
		o.sharedSecret2 = o.sharedSecret
	}
	return o, nil
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// commandLine is the invocation as it would be typed again, with secrets
// replaced, so that published results never leak them.
func commandLine(args []string) string {
	out := []string{"veche-bench"}
	redactNext := false
	for _, a := range args {
		switch {
		case redactNext:
			a, redactNext = "REDACTED", false
		case slices.Contains(secretFlags, strings.TrimLeft(a, "-")) && strings.HasPrefix(a, "-"):
			redactNext = true
		default:
			for _, name := range secretFlags {
				f := "-" + name + "="
				if strings.HasPrefix(a, "-"+f) {
					f = "-" + f
				}
				if strings.HasPrefix(a, f) {
					a = f + "REDACTED"
				}
			}
		}
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`*?!&;|<>()[]{}#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// secretFlags are the flags whose values are never printed.
var secretFlags = []string{"shared-secret", "registration-token", "shared-secret2", "registration-token2"}

// bench is one run against one server (two for federation).
type bench struct {
	opts *options
	c    *client
	reg  *registrar
	// c2 and reg2 reach the second server (--url2), when given.
	c2   *client
	reg2 *registrar
	// runID goes into every message so that runs never confuse each
	// other's messages in a shared database.
	runID string
	pool  []*user
	log   io.Writer
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitUsage
	}
	if err != nil {
		fmt.Fprintln(stderr, "veche-bench:", err)
		return exitUsage
	}
	rep, err := runBench(ctx, o, stderr)
	if rep != nil {
		rep.Command = commandLine(args)
		if o.json {
			err = errors.Join(err, writeJSON(stdout, rep))
		} else {
			writeText(stdout, rep)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "veche-bench:", err)
		return exitFailed
	}
	if !rep.OK {
		return exitFailed
	}
	return exitOK
}

// runBench registers the users and runs the scenarios. The report it
// returns is complete for every scenario that ran, even when a later
// error stops the run.
func runBench(ctx context.Context, o *options, log io.Writer) (*Report, error) {
	b := &bench{
		opts: o, log: log, runID: o.prefix,
		// Senders, the long-poll and room set-up each hold a connection.
		c: newClient(o.url, o.prefix, o.senders+16, o.timeout),
	}
	defer b.c.close()
	b.reg = &registrar{c: b.c, password: "vb-" + randomHex(12), token: o.registrationToken, sharedSecret: o.sharedSecret}
	if o.url2 != "" {
		b.c2 = newClient(o.url2, o.prefix, o.senders+16, o.timeout)
		defer b.c2.close()
		b.reg2 = &registrar{c: b.c2, password: b.reg.password, token: o.registrationToken2, sharedSecret: o.sharedSecret2}
	}
	rep := &Report{URL: o.url, URL2: o.url2, RunID: o.prefix, OK: true, Settings: settings{
		Users: o.users, Rooms: o.rooms, Senders: o.senders, Messages: o.messages, History: o.history,
		InitialSyncs: o.initialSyncs, Registration: b.reg.method(),
	}}
	if slices.Contains(o.scenarios, "big-join") {
		rep.Settings.BigMembers, rep.Settings.BigState, rep.Settings.BigRoomVersion = o.bigMembers, o.bigState, o.bigRoomVersion
	}
	start := time.Now()
	defer func() { rep.WallSeconds = time.Since(start).Seconds() }()

	versions, err := b.c.versions(ctx)
	if err != nil {
		return nil, err
	}
	rep.Versions = versions
	var before procSample
	if o.pid > 0 {
		if before, err = readProc(o.pid); err != nil {
			return nil, fmt.Errorf("--pid: %w", err)
		}
	}

	fmt.Fprintf(log, "registering %d users (%s)…\n", o.users, b.reg.method())
	regStart := time.Now()
	b.pool = make([]*user, o.users)
	var regErrs tally
	// Password hashing is deliberately slow; a few at a time is enough.
	parallel(ctx, o.users, min(o.senders, 4), &regErrs, func(_, i int) {
		u, err := b.reg.register(ctx, fmt.Sprintf("%s-u%d", o.prefix, i))
		if err != nil {
			regErrs.fail(err)
			return
		}
		b.pool[i] = u
	})
	if regErrs.errors > 0 {
		return nil, errors.New(regErrs.problems[0])
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Setup = setupFigures{Users: o.users, Seconds: time.Since(regStart).Seconds()}

	for _, name := range o.scenarios {
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
		res := b.runScenario(ctx, scenarios[i])
		rep.Scenarios = append(rep.Scenarios, res)
		rep.OK = rep.OK && res.OK
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}

	if o.pid > 0 {
		after, err := readProc(o.pid)
		if err != nil {
			return rep, fmt.Errorf("--pid after the run: %w", err)
		}
		rep.Server = &serverTotals{
			RSSBeforeKiB: before.RSSKiB, RSSAfterKiB: after.RSSKiB,
			HWMBeforeKiB: before.HWMKiB, HWMAfterKiB: after.HWMKiB,
			CPUSeconds: after.CPUSeconds - before.CPUSeconds,
		}
	}
	return rep, nil
}

func (b *bench) runScenario(ctx context.Context, s scenario) *Result {
	fmt.Fprintf(b.log, "%s: %s…\n", s.name, s.description)
	r := &Result{Name: s.name, Description: s.description}
	var before, before2 procSample
	havePID, havePID2 := false, false
	if b.opts.pid > 0 {
		var err error
		before, err = readProc(b.opts.pid)
		havePID = err == nil
	}
	if b.opts.pid2 > 0 && s.name == "federation" {
		var err error
		before2, err = readProc(b.opts.pid2)
		havePID2 = err == nil
	}
	limited := b.c.rateLimited.Load()
	var t tally
	err := s.run(b, ctx, r, &t)
	if err != nil {
		t.problem("%v", err)
	}
	r.RateLimited = b.c.rateLimited.Load() - limited
	r.Errors = t.errors
	r.Problems = t.problems
	r.OK = len(r.Problems) == 0 && r.Errors == 0
	if havePID {
		if after, err := readProc(b.opts.pid); err == nil {
			r.Server = &serverUsage{RSSBeforeKiB: before.RSSKiB, RSSAfterKiB: after.RSSKiB, HWMKiB: after.HWMKiB, CPUSeconds: after.CPUSeconds - before.CPUSeconds}
		}
	}
	if havePID2 {
		if after, err := readProc(b.opts.pid2); err == nil {
			r.Server2 = &serverUsage{RSSBeforeKiB: before2.RSSKiB, RSSAfterKiB: after.RSSKiB, HWMKiB: after.HWMKiB, CPUSeconds: after.CPUSeconds - before2.CPUSeconds}
		}
	}
	return r
}
