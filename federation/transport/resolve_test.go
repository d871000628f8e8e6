package transport

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func srv(target string, port, priority, weight uint16) *net.SRV {
	return &net.SRV{Target: target, Port: port, Priority: priority, Weight: weight}
}

func TestResolve(t *testing.T) {
	ca := newTestCA(t)
	wkHosts := []string{
		"wk-ip.test", "wk-ip6.test", "wk-port.test", "wk-srv.test", "wk-legacy.test", "wk-plain.test",
		"wk-redirect.test", "wk-redirect2.test", "wk-loop.test", "wk-hops.test", "wk-http.test",
		"wk-big.test", "wk-badjson.test", "wk-badname.test", "wk-missing.test", "wk-500.test",
		"nowk-srv.test", "nowk-legacy.test", "nowk-both.test", "nowk-dot.test", "nowk-plain.test",
		"nowk-weights.test", "example.org",
	}
	s := newFedServer(t, ca, wkHosts...)
	dns := newFakeDNS()
	for _, h := range wkHosts {
		dns.setIPs(h, "127.0.0.1")
	}
	wkURL := func(host string) string { return "https://" + host + ":" + s.port + "/.well-known/matrix/server" }

	s.setWellKnown("wk-ip.test", mServer("5.6.7.8"))
	s.setWellKnown("wk-ip6.test", mServer("[2001:db8::5]:9000"))
	s.setWellKnown("wk-port.test", mServer("fed.example.net:4443"))
	s.setWellKnown("wk-srv.test", mServer("deleg.example.net"))
	dns.setSRV("_matrix-fed._tcp.deleg.example.net", srv("a.example.net.", 443, 10, 0), srv("b.example.net.", 8443, 5, 0))
	s.setWellKnown("wk-legacy.test", mServer("deleg2.example.net"))
	dns.setSRV("_matrix._tcp.deleg2.example.net", srv("c.example.net.", 1234, 0, 0))
	s.setWellKnown("wk-plain.test", mServer("deleg3.example.net"))
	s.setWellKnown("wk-redirect.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, wkURL("wk-redirect2.test"), http.StatusFound)
	})
	s.setWellKnown("wk-redirect2.test", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("n") == "" {
			http.Redirect(w, r, wkURL("wk-redirect2.test")+"?n=1", http.StatusMovedPermanently)
			return
		}
		mServer("final.example.net:1")(w, r)
	})
	s.setWellKnown("wk-loop.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, wkURL("wk-loop.test"), http.StatusFound)
	})
	s.setWellKnown("wk-hops.test", func(w http.ResponseWriter, r *http.Request) {
		var n int
		_, _ = fmt.Sscan(r.URL.Query().Get("n"), &n)
		http.Redirect(w, r, fmt.Sprintf("%s?n=%d", wkURL("wk-hops.test"), n+1), http.StatusFound)
	})
	s.setWellKnown("wk-http.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://wk-http.test/.well-known/matrix/server", http.StatusFound)
	})
	s.setWellKnown("wk-big.test", respond(http.StatusOK, `{"m.server":"big.example.net","pad":"`+strings.Repeat("x", 50<<10)+`"}`))
	s.setWellKnown("wk-badjson.test", respond(http.StatusOK, `{"m.server":`))
	s.setWellKnown("wk-badname.test", mServer("bad name!"))
	s.setWellKnown("wk-missing.test", respond(http.StatusOK, `{}`))
	s.setWellKnown("wk-500.test", respond(http.StatusInternalServerError, `{"m.server":"x.example.net"}`))
	// A port in the name skips well-known even if there is one.
	s.setWellKnown("example.org", mServer("elsewhere.example.net"))

	dns.setSRV("_matrix-fed._tcp.nowk-srv.test", srv("t1.example.net.", 8448, 0, 0))
	dns.setSRV("_matrix._tcp.nowk-legacy.test", srv("t2.example.net.", 443, 0, 0))
	dns.setSRV("_matrix-fed._tcp.nowk-both.test", srv("new.example.net.", 1, 0, 0))
	dns.setSRV("_matrix._tcp.nowk-both.test", srv("old.example.net.", 2, 0, 0))
	dns.setSRV("_matrix-fed._tcp.nowk-dot.test", srv(".", 0, 0, 0))
	// Weight 0 always loses to a positive weight of the same priority.
	dns.setSRV("_matrix-fed._tcp.nowk-weights.test",
		srv("light.example.net.", 1, 7, 0), srv("heavy.example.net.", 2, 7, 5), srv("later.example.net.", 3, 9, 100))
	dns.srvErr["_matrix-fed._tcp.srvfail.test"] = &net.DNSError{Err: "server misbehaving", IsTemporary: true}

	tr := newTestTransport(t, Options{
		Resolver: dns, RootCAs: ca.pool, AllowPrivateNetworks: true,
		Hosts: map[string]string{"override.test": "10.0.0.1:9999", "override2.test:8448": "[fd00::1]:443"},
	}, s)

	d := func(addr, host, tlsName string) Destination {
		return Destination{Addr: addr, Host: host, TLSServerName: tlsName}
	}
	fallback := func(host string) []Destination { return []Destination{d(host+":8448", host, host)} }
	tests := []struct {
		name    string
		want    []Destination
		wantErr string
	}{
		// Step 1: IP literals.
		{name: "1.2.3.4", want: []Destination{d("1.2.3.4:8448", "1.2.3.4", "1.2.3.4")}},
		{name: "1.2.3.4:1234", want: []Destination{d("1.2.3.4:1234", "1.2.3.4:1234", "1.2.3.4")}},
		{name: "[2001:db8::1]", want: []Destination{d("[2001:db8::1]:8448", "[2001:db8::1]", "2001:db8::1")}},
		{name: "[2001:db8::1]:99", want: []Destination{d("[2001:db8::1]:99", "[2001:db8::1]:99", "2001:db8::1")}},
		// Step 2: explicit port.
		{name: "example.org:8000", want: []Destination{d("example.org:8000", "example.org:8000", "example.org")}},
		// Step 3: well-known delegation.
		{name: "wk-ip.test", want: []Destination{d("5.6.7.8:8448", "5.6.7.8", "5.6.7.8")}},
		{name: "wk-ip6.test", want: []Destination{d("[2001:db8::5]:9000", "[2001:db8::5]:9000", "2001:db8::5")}},
		{name: "wk-port.test", want: []Destination{d("fed.example.net:4443", "fed.example.net:4443", "fed.example.net")}},
		{name: "wk-srv.test", want: []Destination{
			d("b.example.net:8443", "deleg.example.net", "deleg.example.net"),
			d("a.example.net:443", "deleg.example.net", "deleg.example.net"),
		}},
		{name: "wk-legacy.test", want: []Destination{d("c.example.net:1234", "deleg2.example.net", "deleg2.example.net")}},
		{name: "wk-plain.test", want: fallback("deleg3.example.net")},
		{name: "wk-redirect.test", want: []Destination{d("final.example.net:1", "final.example.net:1", "final.example.net")}},
		// Unusable well-known: on to SRV and port 8448 for the name itself.
		{name: "wk-loop.test", want: fallback("wk-loop.test")},
		{name: "wk-hops.test", want: fallback("wk-hops.test")},
		{name: "wk-http.test", want: fallback("wk-http.test")},
		{name: "wk-big.test", want: fallback("wk-big.test")},
		{name: "wk-badjson.test", want: fallback("wk-badjson.test")},
		{name: "wk-badname.test", want: fallback("wk-badname.test")},
		{name: "wk-missing.test", want: fallback("wk-missing.test")},
		{name: "wk-500.test", want: fallback("wk-500.test")},
		{name: "nodns.test", want: fallback("nodns.test")},
		// Steps 4-6: SRV records of the name itself.
		{name: "nowk-srv.test", want: []Destination{d("t1.example.net:8448", "nowk-srv.test", "nowk-srv.test")}},
		{name: "nowk-legacy.test", want: []Destination{d("t2.example.net:443", "nowk-legacy.test", "nowk-legacy.test")}},
		{name: "nowk-both.test", want: []Destination{d("new.example.net:1", "nowk-both.test", "nowk-both.test")}},
		{name: "nowk-dot.test", want: fallback("nowk-dot.test")},
		{name: "nowk-weights.test", want: []Destination{
			d("heavy.example.net:2", "nowk-weights.test", "nowk-weights.test"),
			d("light.example.net:1", "nowk-weights.test", "nowk-weights.test"),
			d("later.example.net:3", "nowk-weights.test", "nowk-weights.test"),
		}},
		{name: "nowk-plain.test", want: fallback("nowk-plain.test")},
		// federation.hosts, case-insensitively.
		{name: "override.test", want: []Destination{{Addr: "10.0.0.1:9999", Host: "override.test", TLSServerName: "override.test", trusted: true}}},
		{name: "Override2.test:8448", want: []Destination{{Addr: "[fd00::1]:443", Host: "Override2.test:8448", TLSServerName: "Override2.test", trusted: true}}},
		// Errors.
		{name: "bad name!", wantErr: "invalid server name"},
		{name: "example.org:", wantErr: "invalid server name"},
		{name: "example.org:0", wantErr: "invalid server name"},
		{name: "2001:db8::1", wantErr: "invalid server name"},
		{name: "", wantErr: "invalid server name"},
		{name: "srvfail.test", wantErr: "server misbehaving"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tr.Resolve(context.Background(), tc.name)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve(%q) = %v, %v; want error containing %q", tc.name, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Resolve(%q) =\n  %+v, %v\nwant\n  %+v", tc.name, got, err, tc.want)
			}
		})
	}
	if n := s.hits("example.org"); n != 0 {
		t.Errorf("well-known of example.org fetched %d times for a name with a port", n)
	}
}

// TestWellKnownCache walks one host through cache expiry, back-off after
// failures, keeping a good delegation through an outage, and recovery.
func TestWellKnownCache(t *testing.T) {
	ca := newTestCA(t)
	s := newFedServer(t, ca, "cache.test")
	dns := newFakeDNS()
	dns.setIPs("cache.test", "127.0.0.1")
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	tr := newTestTransport(t, Options{Resolver: dns, RootCAs: ca.pool, AllowPrivateNetworks: true, Now: clock.Now}, s)

	const fallback = "cache.test:8448"
	steps := []struct {
		advance  time.Duration
		serve    http.HandlerFunc // nil: unchanged
		wantAddr string
		wantHits int
	}{
		{0, mServer("a.example.net:1", "Cache-Control", "public, max-age=7200"), "a.example.net:1", 1},
		{2*time.Hour - time.Second, nil, "a.example.net:1", 1},
		{2 * time.Second, mServer("b.example.net:1"), "b.example.net:1", 2}, // no headers: 24h
		{24*time.Hour - 2*time.Second, nil, "b.example.net:1", 2},
		// An outage keeps b, asking again every 2 minutes...
		{2 * time.Second, respond(http.StatusServiceUnavailable, ""), "b.example.net:1", 3},
		{2*time.Minute - time.Second, nil, "b.example.net:1", 3},
		{time.Second, nil, "b.example.net:1", 4},
		// ...for an hour past its expiry.
		{time.Hour, nil, fallback, 5},
		// Failures back off: 10, 20, 40 minutes, then at most an hour.
		{10*time.Minute - time.Second, respond(http.StatusNotFound, ""), fallback, 5},
		{time.Second, nil, fallback, 6},
		{20*time.Minute - time.Second, nil, fallback, 6},
		{time.Second, nil, fallback, 7},
		{40 * time.Minute, nil, fallback, 8},
		{time.Hour - time.Second, nil, fallback, 8},
		// Recovery once the failure expires.
		{time.Second, mServer("c.example.net:1", "Cache-Control", "max-age=60"), "c.example.net:1", 9},
		// max-age=60 is raised to the 5 minute floor.
		{5*time.Minute - time.Second, nil, "c.example.net:1", 9},
		{time.Second, mServer("d.example.net:1", "Cache-Control", "max-age=9999999"), "d.example.net:1", 10},
		// and a huge max-age is capped at 48 hours.
		{48*time.Hour - time.Second, nil, "d.example.net:1", 10},
		{time.Second, mServer("e.example.net:1", "Cache-Control", "no-store"), "e.example.net:1", 11},
		{5 * time.Minute, nil, "e.example.net:1", 12},
		// A definitive failure (bad JSON) after a good answer falls back at once.
		{5 * time.Minute, respond(http.StatusOK, "nope"), fallback, 13},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		if st.serve != nil {
			s.setWellKnown("cache.test", st.serve)
		}
		got, err := tr.Resolve(context.Background(), "cache.test")
		if err != nil || len(got) != 1 || got[0].Addr != st.wantAddr {
			t.Fatalf("step %d: Resolve = %+v, %v; want addr %s", i, got, err, st.wantAddr)
		}
		if h := s.hits("cache.test"); h != st.wantHits {
			t.Fatalf("step %d: %d well-known fetches, want %d", i, h, st.wantHits)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Add(-time.Minute).Format(http.TimeFormat) // server clock differs from ours
	tests := []struct {
		header []string
		want   time.Duration
	}{
		{nil, 24 * time.Hour},
		{[]string{"Cache-Control", "max-age=3600"}, time.Hour},
		{[]string{"Cache-Control", `public, MAX-AGE="120"`}, 2 * time.Minute},
		{[]string{"Cache-Control", "max-age=3600, no-store"}, 0},
		{[]string{"Cache-Control", "no-cache"}, 0},
		{[]string{"Cache-Control", "max-age=bogus"}, 24 * time.Hour},
		{[]string{"Cache-Control", "max-age=99999999999999"}, (1 << 30) * time.Second},
		{[]string{"Expires", now.Add(3 * time.Hour).Format(http.TimeFormat)}, 3 * time.Hour},
		{[]string{"Expires", now.Add(3 * time.Hour).Format(http.TimeFormat), "Date", date}, 3*time.Hour + time.Minute},
		{[]string{"Expires", "0"}, 0},
		{[]string{"Expires", now.Add(time.Hour).Format(http.TimeFormat), "Cache-Control", "max-age=60"}, time.Minute},
	}
	for _, tc := range tests {
		h := http.Header{}
		for i := 0; i+1 < len(tc.header); i += 2 {
			h.Set(tc.header[i], tc.header[i+1])
		}
		if got := cacheTTL(h, now); got != tc.want {
			t.Errorf("cacheTTL(%v) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestSRVCache(t *testing.T) {
	dns := newFakeDNS()
	dns.setSRV("_matrix-fed._tcp.srvcache.test", srv("t.example.net.", 443, 0, 0))
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	tr := newTestTransport(t, Options{Resolver: dns, Now: clock.Now}, nil)
	const fed, legacy = "_matrix-fed._tcp.srvcache.test", "_matrix._tcp.plain.test"

	steps := []struct {
		advance           time.Duration
		name              string
		srvErr            error
		wantAddr          string
		wantFed, wantLegs int
	}{
		{0, "srvcache.test", nil, "t.example.net:443", 1, 0},
		{srvTTL - time.Second, "srvcache.test", nil, "t.example.net:443", 1, 0},
		{time.Second, "srvcache.test", nil, "t.example.net:443", 2, 0},
		// A temporary DNS failure serves the expired answer.
		{srvTTL, "srvcache.test", &net.DNSError{Err: "timeout", IsTimeout: true}, "t.example.net:443", 3, 0},
		// "No records" is cached too.
		{0, "plain.test", nil, "plain.test:8448", 3, 1},
		{srvTTL - time.Second, "plain.test", nil, "plain.test:8448", 3, 1},
		{time.Second, "plain.test", nil, "plain.test:8448", 3, 2},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		dns.mu.Lock()
		dns.srvErr[fed] = st.srvErr
		dns.mu.Unlock()
		got, err := tr.Resolve(context.Background(), st.name)
		if err != nil || len(got) != 1 || got[0].Addr != st.wantAddr {
			t.Fatalf("step %d: Resolve(%s) = %+v, %v; want addr %s", i, st.name, got, err, st.wantAddr)
		}
		if f, l := dns.calls(fed), dns.calls(legacy); f != st.wantFed || l != st.wantLegs {
			t.Fatalf("step %d: %d %s and %d %s lookups, want %d and %d", i, f, fed, l, legacy, st.wantFed, st.wantLegs)
		}
	}
}

func TestOrderSRV(t *testing.T) {
	// Priorities are strict.
	got := orderSRV([]*net.SRV{srv("c.", 1, 30, 1), srv("a.", 1, 10, 0), srv("b.", 1, 20, 50)})
	var targets []string
	for _, r := range got {
		targets = append(targets, r.Target)
	}
	if want := []string{"a.", "b.", "c."}; !slices.Equal(targets, want) {
		t.Fatalf("orderSRV targets = %v, want %v", targets, want)
	}
	// Within a priority, weights share out first place: 1:3.
	first := map[string]int{}
	const n = 4000
	for range n {
		first[orderSRV([]*net.SRV{srv("light.", 1, 0, 1), srv("heavy.", 1, 0, 3)})[0].Target]++
	}
	if h := first["heavy."]; h < n*65/100 || h > n*85/100 {
		t.Fatalf("heavy record first %d of %d times, want about 75%%", h, n)
	}
}

// TestSweep checks that cache entries of names no longer used are dropped.
func TestSweep(t *testing.T) {
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	tr := newTestTransport(t, Options{Resolver: newFakeDNS(), Now: clock.Now}, nil)
	for _, name := range []string{"a.test", "b.test"} {
		if _, err := tr.Resolve(context.Background(), name); err != nil {
			t.Fatal(err)
		}
		clock.Advance(3 * time.Hour)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if _, ok := tr.wkCache["a.test"]; ok || len(tr.wkCache) != 1 {
		t.Errorf("well-known cache after sweep: %v, want only b.test", tr.wkCache)
	}
	if _, ok := tr.srvCache["_matrix-fed._tcp.a.test"]; ok || len(tr.srvCache) != 2 {
		t.Errorf("SRV cache after sweep: %v, want only b.test's two", tr.srvCache)
	}
}

// TestConcurrentResolve checks that simultaneous lookups of one name share
// a single well-known fetch.
func TestConcurrentResolve(t *testing.T) {
	ca := newTestCA(t)
	s := newFedServer(t, ca, "busy.test")
	s.setWellKnown("busy.test", mServer("deleg.example.net:1"))
	dns := newFakeDNS()
	dns.setIPs("busy.test", "127.0.0.1")
	tr := newTestTransport(t, Options{Resolver: dns, RootCAs: ca.pool, AllowPrivateNetworks: true}, s)
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			got, err := tr.Resolve(context.Background(), "busy.test")
			if err == nil && (len(got) != 1 || got[0].Addr != "deleg.example.net:1") {
				err = fmt.Errorf("got %+v", got)
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if h := s.hits("busy.test"); h != 1 {
		t.Fatalf("%d well-known fetches, want 1", h)
	}
}
