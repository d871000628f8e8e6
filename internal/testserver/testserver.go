// Package testserver starts real Veche servers for end-to-end tests: on
// 127.0.0.1:0, with a fresh database on the backend the test run selects
// (see testdb), cheap password hashing, rate limits off and registration
// on unless a test says otherwise. Each server is stopped when its test
// ends. Set VECHE_TEST_LOG=debug to see server logs.
package testserver

import (
	"context"
	"io"
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
	dir := t.TempDir()
	path := filepath.Join(dir, "veche.yaml")
	data, err := config.Generate(config.GenerateOptions{ServerName: "test.veche", DatabaseURL: testdb.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, map[string]any{
		"listen.client":               "127.0.0.1:0",
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
	s := &Server{Config: cfg, t: t, setup: setup}
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := server.New(context.Background(), s.Config, server.Options{Log: s.setup.Log, Now: s.setup.Now})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		_ = srv.Shutdown(context.Background())
		s.t.Fatal(err)
	}
	s.Server = srv
	s.URL = "http://" + srv.ClientAddr().String()
	// Later restarts keep the same port, so clients can keep their URL.
	s.Config.Listen.Client = srv.ClientAddr().String()
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
