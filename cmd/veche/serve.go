package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
	"github.com/veche/veche/server"
)

// configFlags are the flags every config-reading command shares.
type configFlags struct {
	path      string
	overrides keyValues
}

func (c *configFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.path, "config", config.DefaultPath, "path of the config file")
	c.overrides = keyValues{}
	fs.Var(c.overrides, "set", "override a config key: --set key=value (repeatable)")
}

// load reads the config and reports unknown keys as warnings.
func (c *configFlags) load(env *environment, log logrus.FieldLogger) (*config.Config, error) {
	cfg, unknown, err := config.Load(c.path, c.overrides)
	for _, k := range unknown {
		log.WithField("key", k).Warn("Unknown config key ignored")
	}
	return cfg, err
}

func cmdServe(env *environment, args []string) error {
	fs := newFlagSet(env, "serve")
	var cf configFlags
	cf.register(fs)
	serverName := fs.String("server-name", "", "server name for a config created on first start (also sets server_name)")
	listen := fs.String("listen-client", "", "host:port of the client API (sets listen.client)")
	listenFed := fs.String("listen-federation", "", "host:port of the federation TLS listener (sets listen.federation)")
	dbURL := fs.String("database-url", "", "database URL (sets database.url)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	for key, v := range map[string]string{"server_name": *serverName, "listen.client": *listen, "listen.federation": *listenFed, "database.url": *dbURL} {
		if v != "" {
			cf.overrides[key] = v
		}
	}

	bootLog := newLogger(env, "info", "text")
	firstStart, err := ensureConfig(env, cf.path, *serverName, *dbURL)
	if err != nil {
		return err
	}
	cfg, err := cf.load(env, bootLog)
	if err != nil {
		return err
	}
	log := newLogger(env, cfg.Log.Level, cfg.Log.Format)
	srv, err := server.New(env.ctx, cfg, server.Options{Log: log})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		_ = srv.Shutdown(context.Background())
		return err
	}
	addr := srv.ClientAddr().String()
	if firstStart {
		fmt.Fprintf(env.stdout, `
Veche is running for server name %q.
  config:      %s (edit it, then restart; server_name cannot change once users exist)
  signing key: %s
  database:    %s
  client API:  http://%s/
%s
Create the first user (an admin) with:
  veche user create alice --admin --config %s

`, cfg.ServerName, absPath(cf.path), cfg.Path(cfg.SigningKeyPath), cfg.Database.Redacted(), addr, fedLine(srv, cfg), cf.path)
	}
	if env.ready != nil {
		env.ready(addr)
	}
	<-env.ctx.Done()
	log.Info("Shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return srv.Shutdown(ctx)
}

// fedLine describes the federation listener for the first-start message.
func fedLine(srv *server.Server, cfg *config.Config) string {
	a := srv.FederationAddr()
	if a == nil {
		return "  federation:  off (listen.federation is empty)\n"
	}
	return fmt.Sprintf("  federation:  https://%s/ (TLS certificate %s)\n", a, cfg.Path(cfg.TLS.CertPath))
}

// ensureConfig writes a fresh config file at path when there is none, and
// reports whether it did. The database URL goes into the file, like the
// server name, because the admin commands read the file without the flag
// and would otherwise open a different database.
func ensureConfig(env *environment, path, serverName, dbURL string) (bool, error) {
	exists, err := config.Exists(path)
	if err != nil || exists {
		return false, err
	}
	if serverName == "" {
		serverName = env.getenv(config.EnvPrefix + "_SERVER_NAME")
	}
	if serverName == "" {
		serverName = "localhost"
	}
	data, err := config.Generate(config.GenerateOptions{ServerName: serverName, DatabaseURL: dbURL})
	if err != nil {
		return false, err
	}
	if err := writeNewFile(path, data); err != nil {
		return false, err
	}
	fmt.Fprintf(env.stdout, "Created %s for server name %q.\n", absPath(path), serverName)
	return true, nil
}

// writeNewFile creates path (mode 0600: it holds secrets), refusing to
// overwrite.
func writeNewFile(path string, data []byte) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists; not overwriting it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func newLogger(env *environment, level, format string) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(env.stderr)
	if lvl, err := config.ParseLogLevel(level); err == nil {
		l.SetLevel(lvl)
	}
	if format == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return l
}
