// Package server assembles Veche's components into one embeddable server:
// New opens storage and builds the components, Start binds the listeners
// without blocking, Shutdown drains and closes everything.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/clientapi"
	"github.com/veche/veche/config"
	"github.com/veche/veche/e2ee"
	"github.com/veche/veche/federation"
	"github.com/veche/veche/federation/sender"
	"github.com/veche/veche/federation/transport"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/internal/tlscert"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/syncapi"
	"github.com/veche/veche/typing"
)

// Server is one running Veche homeserver.
type Server struct {
	cfg      *config.Config
	log      logrus.FieldLogger
	db       *storage.DB
	key      signingkey.Key
	accounts *accounts.Service
	rooms    *roomserver.Roomserver
	sync     *syncapi.Sync
	typing   *typing.Tracker
	keys     *e2ee.Service
	metrics  *httpapi.Metrics
	fed      *federation.Federation
	sender   *sender.Sender
	fedTrans *transport.Transport
	presence *presence.Presence

	clientSrv  *http.Server
	metricsSrv *http.Server
	fedSrv     *http.Server // nil when listen.federation is empty
	clientLn   net.Listener
	metricsLn  net.Listener
	fedLn      net.Listener
	// fedListener is a pre-opened federation listener from Options.
	fedListener net.Listener

	// bg is the lifetime of background workers; cancelled on Shutdown.
	bg       context.Context
	stopBg   context.CancelFunc
	workers  sync.WaitGroup
	shutdown sync.Once
	shutErr  error
}

// Options are the server's inputs besides its config.
type Options struct {
	Log logrus.FieldLogger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// FederationListener, when set, is used instead of listening on
	// listen.federation (which should then name its address). Tests open
	// listeners first so that every server of a federation knows the
	// others' ports before any starts. Start wraps it in TLS.
	FederationListener net.Listener
}

// New opens the database (running migrations), loads or creates the
// signing key, and builds every component. Nothing listens yet.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	log := opts.Log
	backend, dsn, err := cfg.Database.Parse(cfg.Dir)
	if err != nil {
		return nil, err
	}
	key, created, err := signingkey.LoadOrCreate(cfg.Path(cfg.SigningKeyPath))
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if created {
		log.WithField("path", cfg.Path(cfg.SigningKeyPath)).WithField("key_id", key.ID).Info("Created a new signing key")
	}
	db, err := storage.Open(ctx, backend, dsn, storage.Options{MaxOpenConns: cfg.Database.MaxOpenConns, Log: log.WithField("component", "storage")})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, db: db, key: key, metrics: httpapi.NewMetrics()}
	s.metrics.RegisterDBStats(db.Pools())
	s.accounts = accounts.New(accounts.Deps{
		DB: db, ServerName: spec.ServerName(cfg.ServerName), Password: cfg.Password, Auth: cfg.Auth,
		Log: log.WithField("component", "accounts"), Now: opts.Now,
	})
	maxPos, err := db.MaxStreamPos(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	st := stream.New(maxPos)
	s.rooms = roomserver.New(roomserver.Deps{
		DB: db, ServerName: spec.ServerName(cfg.ServerName), Key: key, Stream: st,
		Log: log.WithField("component", "roomserver"), Now: opts.Now,
	})
	s.typing = typing.New(st, opts.Now)
	s.presence = presence.New(presence.Deps{
		DB: db, Stream: st, ServerName: spec.ServerName(cfg.ServerName), Enabled: cfg.Presence.Enabled,
		Log: log.WithField("component", "presence"), Now: opts.Now,
	})
	s.keys = e2ee.New(e2ee.Deps{DB: db, Stream: st, ServerName: spec.ServerName(cfg.ServerName), Log: log.WithField("component", "e2ee")})
	s.accounts.OnDeviceChange = s.keys.DevicesChanged

	s.sync = syncapi.New(syncapi.Deps{DB: db, Roomserver: s.rooms, Stream: st, Typing: s.typing, Log: log.WithField("component", "sync"), Now: opts.Now,
		Presence: s.presence})

	s.fedTrans = transport.New(transport.Options{
		Hosts: cfg.Federation.Hosts, InsecureSkipVerify: cfg.Federation.InsecureSkipVerify,
		AllowPrivateNetworks: cfg.Federation.AllowPrivateNetworks, Log: log.WithField("component", "transport"), Now: opts.Now,
	})
	s.fed, err = federation.New(federation.Deps{
		DB: db, Config: cfg, ServerName: spec.ServerName(cfg.ServerName), Key: key, Roomserver: s.rooms,
		Stream: st, Typing: s.typing, Transport: s.fedTrans, Metrics: s.metrics, Log: log.WithField("component", "federation"), Now: opts.Now,
		Presence: s.presence,
		Keys:     s.keys,
	})
	if err != nil {
		s.rooms.Stop()
		db.Close()
		return nil, err
	}
	if cfg.Listen.Federation != "" || opts.FederationListener != nil {
		now := time.Now
		if opts.Now != nil {
			now = opts.Now
		}
		cert, created, err := tlscert.LoadOrCreate(cfg.Path(cfg.TLS.CertPath), cfg.Path(cfg.TLS.KeyPath), cfg.ServerName, now())
		if err != nil {
			s.rooms.Stop()
			db.Close()
			return nil, err
		}
		if created {
			log.WithField("cert", cfg.Path(cfg.TLS.CertPath)).WithField("key", cfg.Path(cfg.TLS.KeyPath)).
				Warn("Created a self-signed TLS certificate for federation; other servers accept it only with insecure_skip_verify, so install a CA-issued one (or terminate TLS in a proxy) for the public federation")
		}
		s.fedSrv = &http.Server{
			Handler:           s.fed.Handler(),
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       5 * time.Minute,
		}
		s.fedListener = opts.FederationListener
	}

	var fedForClients clientapi.Federation
	var edus clientapi.EDUQueue // stays a nil interface without federation
	if s.fedSrv != nil {
		fedForClients = s.fed
		s.sender = sender.New(sender.Deps{
			DB: db, Stream: st, ServerName: spec.ServerName(cfg.ServerName), Client: s.fed.Client(),
			DenyServers: cfg.Federation.DenyServers, Log: log.WithField("component", "federation-sender"), Now: opts.Now,
		})
		s.typing.Listen(s.sender.OnTyping)
		s.presence.EDUs = s.sender
		s.fed.OnInbound = s.sender.Wake
		edus = s.sender
		s.keys.Connect(s.fed, s.sender)
	}
	client := clientapi.New(clientapi.Deps{
		Config: cfg, Accounts: s.accounts, DB: db, Roomserver: s.rooms, Stream: st, Typing: s.typing,
		Federation: fedForClients, EDUs: edus, Log: log.WithField("component", "clientapi"), Now: opts.Now,
		Presence: s.presence, Keys: s.keys,
	})
	rt := httpapi.NewRouter()
	client.Register(rt)
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		rt.Handle("GET "+prefix+"/sync", client.Authed(true, s.sync.Handle))
	}
	rt.Handle("GET /health", http.HandlerFunc(s.health))
	s.clientSrv = &http.Server{
		Handler: httpapi.Wrap(rt, httpapi.Options{
			Log: log.WithField("component", "http"), Metrics: s.metrics, MaxBodyBytes: cfg.MaxRequestBytes, CORS: true, Component: "client",
		}),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          nil,
	}
	if cfg.Listen.Metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics.Handler())
		mux.HandleFunc("GET /health", s.health)
		// Profiles for operators; the metrics listener is private by
		// configuration.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	s.bg, s.stopBg = context.WithCancel(context.Background())
	return s, nil
}

// Start binds the listeners and starts serving. It does not block.
func (s *Server) Start() error {
	var opened []net.Listener
	fail := func(err error) error {
		for _, l := range opened {
			l.Close()
		}
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Listen.Client)
	if err != nil {
		return fail(fmt.Errorf("listen.client: %w", err))
	}
	opened = append(opened, ln)
	var mln, fln net.Listener
	if s.metricsSrv != nil {
		if mln, err = net.Listen("tcp", s.cfg.Listen.Metrics); err != nil {
			return fail(fmt.Errorf("listen.metrics: %w", err))
		}
		opened = append(opened, mln)
	}
	if s.fedSrv != nil {
		fln = s.fedListener
		if fln == nil {
			if fln, err = net.Listen("tcp", s.cfg.Listen.Federation); err != nil {
				return fail(fmt.Errorf("listen.federation: %w", err))
			}
		}
	}
	if s.sender != nil {
		// Before any write: the sender moves the stream past positions
		// it saw before a restart.
		ctx, cancel := context.WithTimeout(s.bg, 30*time.Second)
		err := s.sender.Start(ctx)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("starting the federation sender: %w", err))
		}
	}
	s.clientLn, s.metricsLn, s.fedLn = ln, mln, fln
	if mln != nil {
		s.serve(s.metricsSrv, mln, "metrics")
	}
	if fln != nil {
		s.serve(s.fedSrv, tls.NewListener(fln, s.fedSrv.TLSConfig), "federation")
	}
	s.serve(s.clientSrv, ln, "client")
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		s.accounts.Run(s.bg)
	}()
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		s.presence.Run(s.bg)
	}()
	entry := s.log.WithField("client", ln.Addr().String()).WithField("server_name", s.cfg.ServerName)
	if fln != nil {
		entry = entry.WithField("federation", fln.Addr().String())
	}
	entry.Info("Veche is listening")
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener, name string) {
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.WithError(err).WithField("listener", name).Error("Listener failed")
		}
	}()
}

// ClientAddr is the bound address of the client API listener.
func (s *Server) ClientAddr() net.Addr { return s.clientLn.Addr() }

// MetricsAddr is the bound address of the metrics listener, or nil.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// FederationAddr is the bound address of the federation listener, or nil
// when federation is off.
func (s *Server) FederationAddr() net.Addr {
	if s.fedLn == nil {
		return nil
	}
	return s.fedLn.Addr()
}

// Federation exposes the federation component (key ring, client, ACLs).
func (s *Server) Federation() *federation.Federation { return s.fed }

// Roomserver exposes the room state machine (for tests and, later, the
// federation component).
func (s *Server) Roomserver() *roomserver.Roomserver { return s.rooms }

// Accounts exposes the account service (for admin commands and tests).
func (s *Server) Accounts() *accounts.Service { return s.accounts }

// Shutdown stops accepting connections, lets in-flight requests finish
// until ctx ends, stops background work and closes the database. It is
// safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Do(func() {
		s.sync.Close()
		var errs []error
		for _, srv := range []*http.Server{s.clientSrv, s.metricsSrv, s.fedSrv} {
			if srv == nil {
				continue
			}
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, err)
				srv.Close()
			}
		}
		if s.fedLn == nil && s.fedListener != nil {
			// Never started: the listener we were given is ours to close.
			s.fedListener.Close()
		}
		if s.sender != nil {
			s.sender.Stop()
		}
		s.stopBg()
		s.fedTrans.Close()
		s.rooms.Stop()
		s.typing.Close()
		s.workers.Wait()
		errs = append(errs, s.db.Close())
		s.shutErr = errors.Join(errs...)
		s.log.Info("Veche stopped")
	})
	return s.shutErr
}

// health answers 200 "OK" while the database answers, 503 otherwise.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	httpapi.Info(r.Context()).Route = "GET /health"
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.db.Ping(ctx); err != nil {
		s.log.WithError(err).Warn("Health check: database unreachable")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("database unreachable\n"))
		return
	}
	_, _ = w.Write([]byte("OK"))
}
