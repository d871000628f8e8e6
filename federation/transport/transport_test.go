package transport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	return port
}

func TestRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	s := newFedServer(t, ca, "example.org", "example.com", "deleg.example.com", "fallback.example.org", "override.example", "127.0.0.1")
	port := uint16(s.Listener.Addr().(*net.TCPAddr).Port)
	dns := newFakeDNS()
	for _, h := range []string{"example.org", "example.com", "fed.example.org", "deleg.example.com", "dead.example.org"} {
		dns.setIPs(h, "127.0.0.1")
	}
	dns.setSRV("_matrix-fed._tcp.example.org", srv("fed.example.org.", port, 0, 0))
	dns.setSRV("_matrix-fed._tcp.wrong.example", srv("fed.example.org.", port, 0, 0))
	dns.setSRV("_matrix-fed._tcp.fallback.example.org",
		srv("dead.example.org.", closedPort(t), 1, 0), srv("fed.example.org.", port, 2, 0))
	s.setWellKnown("example.com", mServer("deleg.example.com:"+s.port))

	tests := []struct {
		name       string
		opts       Options
		serverName string
		body       string
		want       seen // Path and Method are checked for every success
		wantErr    string
		refused    bool
	}{
		{name: "SRV", opts: Options{AllowPrivateNetworks: true}, serverName: "example.org",
			want: seen{Host: "example.org", SNI: "example.org"}},
		{name: "well-known delegation", opts: Options{AllowPrivateNetworks: true}, serverName: "example.com",
			want: seen{Host: "deleg.example.com:" + s.port, SNI: "deleg.example.com"}},
		{name: "IP literal sends no SNI", opts: Options{AllowPrivateNetworks: true}, serverName: "127.0.0.1:" + s.port,
			want: seen{Host: "127.0.0.1:" + s.port, SNI: ""}},
		{name: "next candidate after a failed connect, body replayed", opts: Options{AllowPrivateNetworks: true},
			serverName: "fallback.example.org", body: `{"pdus":[]}`,
			want: seen{Host: "fallback.example.org", SNI: "fallback.example.org", Body: `{"pdus":[]}`}},
		{name: "hosts override may be loopback", opts: Options{Hosts: map[string]string{"override.example": "127.0.0.1:" + s.port}},
			serverName: "override.example", want: seen{Host: "override.example", SNI: "override.example"}},
		{name: "loopback via DNS refused", serverName: "example.org", refused: true,
			wantErr: "127.0.0.1 is a loopback address"},
		{name: "loopback literal refused", serverName: "127.0.0.1:" + s.port, refused: true,
			wantErr: "127.0.0.1 is a loopback address"},
		{name: "certificate must match the server name", opts: Options{AllowPrivateNetworks: true},
			serverName: "wrong.example", wantErr: "certificate is valid for"},
		{name: "insecure skips verification", opts: Options{AllowPrivateNetworks: true, InsecureSkipVerify: true},
			serverName: "wrong.example", want: seen{Host: "wrong.example", SNI: "wrong.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Resolver, opts.RootCAs = dns, ca.pool
			tr := newTestTransport(t, opts, s)
			method, body := http.MethodGet, io.Reader(nil)
			if tc.body != "" {
				method, body = http.MethodPut, strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(method, "matrix-federation://"+tc.serverName+"/_matrix/federation/v1/send/1?x=y", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if tc.wantErr != "" {
				if err == nil {
					_ = resp.Body.Close()
					t.Fatalf("request succeeded, want error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, ErrRefusedAddress) != tc.refused {
					t.Fatalf("error %q: want it to contain %q, refused=%v", err, tc.wantErr, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			var got seen
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Method, want.Path, want.Proto = method, "/_matrix/federation/v1/send/1?x=y", 2
			if got != want {
				t.Fatalf("server saw %+v, want %+v", got, want)
			}
		})
	}
}

// TestWellKnownRefusesPrivate checks that the well-known fetch goes
// through the guarded dialer: the delegation is never read, so discovery
// falls back to the name itself.
func TestWellKnownRefusesPrivate(t *testing.T) {
	ca := newTestCA(t)
	s := newFedServer(t, ca, "example.com")
	s.setWellKnown("example.com", mServer("5.6.7.8"))
	dns := newFakeDNS()
	dns.setIPs("example.com", "127.0.0.1")
	for _, tc := range []struct {
		allow    bool
		wantAddr string
		wantHits int
	}{
		{false, "example.com:8448", 0},
		{true, "5.6.7.8:8448", 1},
	} {
		tr := newTestTransport(t, Options{Resolver: dns, RootCAs: ca.pool, AllowPrivateNetworks: tc.allow}, s)
		got, err := tr.Resolve(context.Background(), "example.com")
		if err != nil || len(got) != 1 || got[0].Addr != tc.wantAddr {
			t.Fatalf("allow=%v: Resolve = %+v, %v; want %s", tc.allow, got, err, tc.wantAddr)
		}
		if h := s.hits("example.com"); h != tc.wantHits {
			t.Fatalf("allow=%v: %d well-known fetches reached the server, want %d", tc.allow, h, tc.wantHits)
		}
	}
}

func TestRoundTripRejects(t *testing.T) {
	tr := newTestTransport(t, Options{Resolver: newFakeDNS()}, nil)
	for _, tc := range []struct{ scheme, host, wantErr string }{
		{"https", "example.org", "unsupported scheme"},
		{"matrix-federation", "bad name!", "invalid server name"},
	} {
		req, _ := http.NewRequest(http.MethodGet, "matrix-federation://x/y", nil)
		req.URL.Scheme, req.URL.Host = tc.scheme, tc.host
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("RoundTrip(%s://%s) = %v, want error containing %q", tc.scheme, tc.host, err, tc.wantErr)
		}
	}
}

// TestCloseKeepsWorking checks that Close only drops idle connections:
// the transport stays usable.
func TestCloseKeepsWorking(t *testing.T) {
	ca := newTestCA(t)
	s := newFedServer(t, ca, "127.0.0.1")
	tr := newTestTransport(t, Options{Resolver: newFakeDNS(), RootCAs: ca.pool, AllowPrivateNetworks: true}, s)
	client := &http.Client{Transport: tr}
	for range 2 {
		resp, err := client.Get("matrix://127.0.0.1:" + s.port + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		tr.Close()
	}
}
