// Package testserver starts real Veche servers for end-to-end tests: on
// 127.0.0.1:0, with a fresh database on the backend the test run selects
// (see testdb), cheap password hashing, rate limits off and registration
// on unless a test says otherwise. Each server is stopped when its test
// ends. Set VECHE_TEST_LOG=debug to see server logs.
package testserver

import (
	"context"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/server"
)

// Server is a running test homeserver.
type Server struct {
	*server.Server
	// URL is the client API base URL, e.g. http://127.0.0.1:41234.
	URL    string
	Config *config.Config
	t      testing.TB
	setup  Setup
	fedLn  net.Listener // pre-opened, for the first start
}

// Setup is what options may change before the server starts.
type Setup struct {
	Config *config.Config
	// Log receives the server's logs (default: silent, see Logger).
	Log *logrus.Logger
	// Now is the server's clock (default: time.Now).
	Now func() time.Time
}

// Option adjusts the setup before the server starts.
type Option func(*Setup)

// WithConfig changes config values.
func WithConfig(f func(*config.Config)) Option { return func(s *Setup) { f(s.Config) } }

// Start runs a server for the duration of the test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	// The remote servers single-server tests name are mapped to a closed
	// loopback port: unreachable at once, without asking real DNS.
	unreachable := WithConfig(func(c *config.Config) {
		for _, name := range []string{"remote.example", "elsewhere.example"} {
			if _, ok := c.Federation.Hosts[name]; !ok {
				if c.Federation.Hosts == nil {
					c.Federation.Hosts = map[string]string{}
				}
				c.Federation.Hosts[name] = "127.0.0.1:1"
			}
		}
	})
	s := prepare(t, "test.veche", "127.0.0.1:0", append([]Option{unreachable}, opts...))
	s.start()
	return s
}

// StartFederation runs one server per name (for instance "a.test",
// "b.test") that federate with one another: each config maps every name
// to that server's federation listener in federation.hosts and accepts
// the others' self-signed certificates on loopback. The listeners are
// opened before any server starts, so the ports are known up front and
// stay the same across Restart. Options apply to every server; tell them
// apart by Config.ServerName.
func StartFederation(t testing.TB, names []string, opts ...Option) []*Server {
	t.Helper()
	lns := make([]net.Listener, len(names))
	hosts := map[string]string{}
	for i, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() }) // a no-op once a server took it
		lns[i] = ln
		hosts[name] = ln.Addr().String()
	}
	servers := make([]*Server, len(names))
	for i, name := range names {
		fedOpts := append([]Option{WithConfig(func(c *config.Config) {
			c.Federation.Hosts = maps.Clone(hosts)
			c.Federation.InsecureSkipVerify = true
			c.Federation.AllowPrivateNetworks = true
		})}, opts...)
		s := prepare(t, name, hosts[name], fedOpts)
		s.fedLn = lns[i]
		servers[i] = s
	}
	for _, s := range servers {
		s.start()
	}
	return servers
}

// prepare writes and loads a server's config and applies the options.
func prepare(t testing.TB, serverName, fedAddr string, opts []Option) *Server {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "veche.yaml")
	data, err := config.Generate(config.GenerateOptions{ServerName: serverName, DatabaseURL: testdb.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, map[string]any{
		"listen.client":               "127.0.0.1:0",
		"listen.federation":           fedAddr,
		"registration.enabled":        true,
		"rate_limits.enabled":         false,
		"password.argon2.memory_kib":  64,
		"password.argon2.iterations":  1,
		"password.argon2.parallelism": 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	setup := Setup{Config: cfg, Log: Logger()}
	for _, o := range opts {
		o(&setup)
	}
	if err := cfg.Verify(); err != nil {
		t.Fatal(err)
	}
	return &Server{Config: cfg, t: t, setup: setup}
}

func (s *Server) start() {
	s.t.Helper()
	fedLn := s.fedLn
	s.fedLn = nil // only the first start uses it; Shutdown closes it
	srv, err := server.New(context.Background(), s.Config, server.Options{Log: s.setup.Log, Now: s.setup.Now, FederationListener: fedLn})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Shutdown(context.Background())
		s.t.Fatal(err)
	}
	s.Server = srv
	s.URL = "http://" + srv.ClientAddr().String()
	// Later restarts keep the same ports, so clients and other servers can
	// keep their addresses.
	s.Config.Listen.Client = srv.ClientAddr().String()
	if a := srv.FederationAddr(); a != nil {
		s.Config.Listen.Federation = a.String()
	}
	current := srv
	s.t.Cleanup(func() { s.stop(current) })
}

func (s *Server) stop(srv *server.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.t.Errorf("shutting down test server: %v", err)
	}
}

// Restart stops the server and starts it again on the same database,
// signing key and port.
func (s *Server) Restart() {
	s.t.Helper()
	s.stop(s.Server)
	s.start()
}

// Down stops the server (as a crash or an outage would, after draining
// in-flight requests); Up starts it again on the same database, signing
// key and ports. Other servers see it as unreachable in between.
func (s *Server) Down() {
	s.t.Helper()
	s.stop(s.Server)
}

// Up starts a server stopped with Down.
func (s *Server) Up() {
	s.t.Helper()
	s.start()
}

// Logger returns a logger that is silent unless VECHE_TEST_LOG names a
// level.
func Logger() *logrus.Logger {
	l := logrus.New()
	if lvl, err := logrus.ParseLevel(os.Getenv("VECHE_TEST_LOG")); err == nil && os.Getenv("VECHE_TEST_LOG") != "" {
		l.SetLevel(lvl)
		return l
	}
	l.SetOutput(io.Discard)
	return l
}
