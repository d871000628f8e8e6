package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/internal/version"
	"github.com/veche/veche/storage"
)

// fastHashing keeps argon2 cheap; the generated config asks for 19 MiB.
var fastHashing = []string{"--set", "password.argon2.memory_kib=64", "--set", "password.argon2.iterations=1"}

// syncBuffer is written by server goroutines while serve runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	stdout, stderr string
	err            error
}

// code is the process exit status main would use.
func (r result) code() int {
	if r.err == nil {
		return 0
	}
	return exitCode(r.err)
}

type invocation struct {
	stdin  string
	getenv map[string]string
	// ready, if set, is called with the running server's address; the
	// context passed is cancelled when it returns, stopping the server.
	ready func(addr string)
}

// invoke runs the command line args as main would, without the process.
func invoke(t *testing.T, inv invocation, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr syncBuffer
	env := &environment{
		ctx:    ctx,
		stdin:  strings.NewReader(inv.stdin),
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return inv.getenv[k] },
	}
	if inv.ready != nil {
		env.ready = func(addr string) {
			defer cancel()
			inv.ready(addr)
		}
	}
	err := run(env, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

func runOK(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := invoke(t, invocation{stdin: stdin}, args...)
	if r.err != nil {
		t.Fatalf("veche %s: %v\nstderr:\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// newConfig writes a generated config into a fresh directory and returns
// its path.
func newConfig(t *testing.T, serverName string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "veche.yaml")
	runOK(t, "", "generate-config", "--server-name", serverName, "--output", path)
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{errors.New("boom"), 1},
		{usageError{"bad"}, 2},
		{fmt.Errorf("wrapped: %w", usageError{"bad"}), 2},
		{flag.ErrHelp, 2},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestSimpleCommands(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "veche.yaml")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
		wantErr    string // substring
	}{
		{name: "version", args: []string{"version"}, wantStdout: "veche " + version.Version + "\n"},
		{name: "help", args: []string{"help"}, wantStdout: "Usage: veche <command>"},
		{name: "-h", args: []string{"-h"}, wantStdout: "Usage: veche <command>"},
		{name: "--help", args: []string{"--help"}, wantStdout: "Commands:"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: "Usage: veche", wantErr: `unknown command "frobnicate"`},
		{name: "command help", args: []string{"check-config", "--help"}, wantCode: 2, wantStderr: "-config"},
		{name: "unknown flag", args: []string{"check-config", "--bogus"}, wantCode: 2, wantErr: "-bogus"},
		{name: "bad --set", args: []string{"check-config", "--set", "novalue"}, wantCode: 2, wantErr: "key=value"},
		{name: "user without verb", args: []string{"user"}, wantCode: 2, wantErr: "expected create"},
		{name: "user unknown verb", args: []string{"user", "promote", "alice"}, wantCode: 2, wantErr: `unknown verb "promote"`},
		{name: "user without name", args: []string{"user", "create", "--config", missing}, wantCode: 2, wantErr: "exactly one USERNAME"},
		{name: "user with two names", args: []string{"user", "deactivate", "alice", "bob", "--config", missing}, wantCode: 2, wantErr: "exactly one USERNAME"},
		{name: "generate-config without server name", args: []string{"generate-config"}, wantCode: 2, wantErr: "--server-name is required"},
		{name: "generate-config bad server name", args: []string{"generate-config", "--server-name", "a b"}, wantCode: 1, wantErr: "server_name"},
		{name: "generate-config bad database", args: []string{"generate-config", "--server-name", "example.org", "--database-url", "mysql://db"}, wantCode: 1, wantErr: "database.url"},
		{name: "check-config without file", args: []string{"check-config", "--config", missing}, wantCode: 1, wantErr: missing},
		{name: "generate-keys without config", args: []string{"generate-keys", "--config", missing}, wantCode: 1, wantErr: missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := invoke(t, invocation{}, tt.args...)
			if got := r.code(); got != tt.wantCode {
				t.Errorf("exit code %d (err %v), want %d", got, r.err, tt.wantCode)
			}
			if tt.wantErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want one containing %q", r.err, tt.wantErr)
			}
			if !strings.Contains(r.stdout, tt.wantStdout) {
				t.Errorf("stdout %q, want it to contain %q", r.stdout, tt.wantStdout)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestGenerateConfig(t *testing.T) {
	t.Parallel()
	t.Run("stdout", func(t *testing.T) {
		t.Parallel()
		out := runOK(t, "", "generate-config", "--server-name", "example.org:8448")
		path := filepath.Join(t.TempDir(), "veche.yaml")
		if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, unknown, err := config.Load(path, nil)
		if err != nil || len(unknown) != 0 {
			t.Fatalf("Load of the printed config: %v (unknown %q)", err, unknown)
		}
		if cfg.ServerName != "example.org:8448" || cfg.Database.URL != "sqlite://veche.db" {
			t.Errorf("server_name %q, database.url %q", cfg.ServerName, cfg.Database.URL)
		}
	})
	t.Run("output", func(t *testing.T) {
		t.Parallel()
		// The directory does not exist yet: it is created.
		path := filepath.Join(t.TempDir(), "etc", "veche.yaml")
		dbURL := testdb.URL(t)
		out := runOK(t, "", "generate-config", "--server-name", "example.org", "--database-url", dbURL, "--output", path)
		if !strings.Contains(out, "Wrote "+path) {
			t.Errorf("stdout %q, want it to name %s", out, path)
		}
		// It holds the shared secret and perhaps a database password.
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("config file: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}
		cfg, _, err := config.Load(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Database.URL != dbURL {
			t.Errorf("database.url = %q, want %q", cfg.Database.URL, dbURL)
		}
		before := readFile(t, path)
		r := invoke(t, invocation{}, "generate-config", "--server-name", "other.org", "--output", path)
		if r.err == nil || !strings.Contains(r.err.Error(), "already exists") {
			t.Errorf("second generate-config: %v, want a refusal to overwrite", r.err)
		}
		if !bytes.Equal(readFile(t, path), before) {
			t.Errorf("the existing config was changed")
		}
	})
}

func TestGenerateKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// args returns the flags and the path the key must end up at.
		args func(t *testing.T) ([]string, string)
	}{
		{
			name: "signing_key_path of the config",
			args: func(t *testing.T) ([]string, string) {
				cfg := newConfig(t, "example.org")
				return []string{"--config", cfg}, filepath.Join(filepath.Dir(cfg), "veche.signing.key")
			},
		},
		{
			name: "signing_key_path overridden",
			args: func(t *testing.T) ([]string, string) {
				cfg := newConfig(t, "example.org")
				return []string{"--config", cfg, "--set", "signing_key_path=keys/k"}, filepath.Join(filepath.Dir(cfg), "keys", "k")
			},
		},
		{
			name: "output needs no config",
			args: func(t *testing.T) ([]string, string) {
				dir := t.TempDir()
				out := filepath.Join(dir, "out.key")
				return []string{"--config", filepath.Join(dir, "missing.yaml"), "--output", out}, out
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			flags, keyPath := tt.args(t)
			out := runOK(t, "", append([]string{"generate-keys"}, flags...)...)
			key, err := signingkey.Load(keyPath)
			if err != nil {
				t.Fatalf("loading the written key: %v", err)
			}
			if want := fmt.Sprintf("Wrote signing key %s to %s", key.ID, keyPath); !strings.Contains(out, want) {
				t.Errorf("stdout %q, want %q", out, want)
			}
			if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
			}
			before := readFile(t, keyPath)
			r := invoke(t, invocation{}, append([]string{"generate-keys"}, flags...)...)
			if !errors.Is(r.err, signingkey.ErrExists) {
				t.Errorf("second generate-keys: %v, want ErrExists", r.err)
			}
			if !bytes.Equal(readFile(t, keyPath), before) {
				t.Errorf("the existing key was changed")
			}
		})
	}
}

func TestGenerateKeysRotate(t *testing.T) {
	t.Parallel()
	cfgPath := newConfig(t, "example.org")
	keyPath := filepath.Join(filepath.Dir(cfgPath), "veche.signing.key")
	runOK(t, "", "generate-keys", "--config", cfgPath)
	first, err := signingkey.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	before := string(readFile(t, cfgPath))

	out := runOK(t, "", "generate-keys", "--config", cfgPath, "--rotate")
	second, err := signingkey.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID || second.PrivateKey.Equal(first.PrivateKey) {
		t.Fatal("--rotate kept the key")
	}
	for _, want := range []string{"Retired signing key " + string(first.ID), "Wrote signing key " + string(second.ID)} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout %q lacks %q", out, want)
		}
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	after := string(readFile(t, cfgPath))
	// Only the old_signing_keys line changed; the comments are intact.
	if !strings.Contains(after, "# Public halves of signing keys") || len(after) <= len(before) {
		t.Errorf("config after rotation:\n%s", after)
	}

	runOK(t, "", "generate-keys", "--config", cfgPath, "--rotate")
	cfg, _, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.OldSigningKeys) != 2 {
		t.Fatalf("old_signing_keys = %v, want two keys", cfg.OldSigningKeys)
	}
	for _, k := range []signingkey.Key{first, second} {
		old, ok := cfg.OldSigningKeys[string(k.ID)]
		pub, err := config.DecodePublicKey(old.Key)
		if !ok || err != nil || !pub.Equal(k.Public()) || old.ExpiredTS <= 0 {
			t.Errorf("old_signing_keys[%s] = %+v (%v)", k.ID, old, err)
		}
	}

	if r := invoke(t, invocation{}, "generate-keys", "--config", cfgPath, "--rotate", "--output", keyPath); r.code() != 2 {
		t.Errorf("--rotate with --output: exit %d (%v), want 2", r.code(), r.err)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		edit       func(t *testing.T, path string) // changes the generated file
		set        []string
		wantErr    string
		wantStderr string
	}{
		{name: "valid"},
		{
			name:    "invalid value",
			edit:    func(t *testing.T, path string) { replaceIn(t, path, "level: info", "level: loud") },
			wantErr: "log.level: ",
		},
		{
			name: "several invalid values",
			edit: func(t *testing.T, path string) {
				replaceIn(t, path, "level: info", "level: loud")
				replaceIn(t, path, "client: 127.0.0.1:8008", "client: nowhere")
			},
			wantErr: "listen.client: ",
		},
		{name: "invalid override", set: []string{"--set", "database.url=mysql://db"}, wantErr: "database.url: "},
		{name: "override fixes a value", edit: func(t *testing.T, path string) { replaceIn(t, path, "level: info", "level: loud") }, set: []string{"--set", "log.level=debug"}},
		{
			name:       "unknown key warns",
			edit:       func(t *testing.T, path string) { replaceIn(t, path, "allow_guests:", "allow_gusts:") },
			wantStderr: "key=registration.allow_gusts",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := newConfig(t, "example.org")
			if tt.edit != nil {
				tt.edit(t, path)
			}
			r := invoke(t, invocation{}, append([]string{"check-config", "--config", path}, tt.set...)...)
			if tt.wantErr == "" {
				if r.err != nil {
					t.Fatalf("check-config: %v", r.err)
				}
				if want := path + " is valid\n"; r.stdout != want {
					t.Errorf("stdout %q, want %q", r.stdout, want)
				}
			} else if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) || r.code() != 1 {
				t.Errorf("check-config: %v (exit %d), want exit 1 and an error containing %q", r.err, r.code(), tt.wantErr)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

func replaceIn(t *testing.T, path, old, new string) {
	t.Helper()
	data := string(readFile(t, path))
	if !strings.Contains(data, old) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(data, old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openAccounts opens the database of the config at path as the user
// commands do, for checking what they did.
func openAccounts(t *testing.T, path string, overrides map[string]any) (*accounts.Service, *storage.DB) {
	t.Helper()
	cfg, _, err := config.Load(path, overrides)
	if err != nil {
		t.Fatal(err)
	}
	backend, dsn, err := cfg.Database.Parse(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	db, err := storage.Open(t.Context(), backend, dsn, storage.Options{MaxOpenConns: 2, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return accounts.New(accounts.Deps{DB: db, ServerName: spec.ServerName(cfg.ServerName), Password: cfg.Password, Auth: cfg.Auth, Log: log}), db
}

// TestUserCommands runs the steps in order against one database; each
// step sees what the earlier ones did.
func TestUserCommands(t *testing.T) {
	t.Parallel()
	path := newConfig(t, "example.org")
	dbURL := testdb.URL(t)
	common := append([]string{"--config", path, "--set", "database.url=" + dbURL}, fastHashing...)
	overrides := map[string]any{"database.url": dbURL, "password.argon2.memory_kib": "64", "password.argon2.iterations": "1"}

	checkPassword := func(localpart, password string, wantOK bool) func(t *testing.T) {
		return func(t *testing.T) {
			svc, _ := openAccounts(t, path, overrides)
			_, err := svc.CheckPassword(t.Context(), localpart, password)
			if (err == nil) != wantOK {
				t.Errorf("CheckPassword(%s, %q) = %v, want success %v", localpart, password, err, wantOK)
			}
		}
	}
	checkUser := func(localpart string, wantAdmin, wantDeactivated bool) func(t *testing.T) {
		return func(t *testing.T) {
			_, db := openAccounts(t, path, overrides)
			u, err := db.User(t.Context(), localpart)
			if err != nil {
				t.Fatalf("User(%s): %v", localpart, err)
			}
			if u.IsAdmin != wantAdmin || u.Deactivated() != wantDeactivated {
				t.Errorf("%s: admin %v, deactivated %v; want %v, %v", localpart, u.IsAdmin, u.Deactivated(), wantAdmin, wantDeactivated)
			}
		}
	}

	steps := []struct {
		name     string
		args     []string
		stdin    string
		wantOut  string // substring of stdout on success
		wantErr  string // substring of the error
		wantCode int
		check    func(t *testing.T)
	}{
		{
			name: "create admin", args: []string{"user", "create", "alice", "--admin", "--password-stdin"}, stdin: "longpassword1\n",
			wantOut: "Created admin @alice:example.org",
			check: func(t *testing.T) {
				checkUser("alice", true, false)(t)
				checkPassword("alice", "longpassword1", true)(t)
			},
		},
		{
			name: "create again", args: []string{"user", "create", "alice", "--password-stdin"}, stdin: "longpassword1\n",
			wantErr: "already taken", wantCode: 1,
		},
		{
			name: "create by user ID", args: []string{"user", "create", "@bob:example.org", "--password-stdin"}, stdin: "bobs password\r\n",
			wantOut: "Created user @bob:example.org",
			check:   func(t *testing.T) { checkUser("bob", false, false)(t); checkPassword("bob", "bobs password", true)(t) },
		},
		{
			name: "password too short", args: []string{"user", "create", "carol", "--password-stdin"}, stdin: "short\n",
			wantErr: "Password must be at least 8 characters long", wantCode: 1,
		},
		{
			name: "no password on stdin", args: []string{"user", "create", "carol", "--password-stdin"}, stdin: "",
			wantErr: "no password on stdin", wantCode: 1,
		},
		{
			name: "stdin is no terminal", args: []string{"user", "create", "carol"}, stdin: "longpassword1\n",
			wantErr: "--password-stdin", wantCode: 2,
		},
		{
			name: "invalid username", args: []string{"user", "create", "al ice", "--password-stdin"}, stdin: "longpassword1\n",
			wantErr: "may only contain", wantCode: 1,
		},
		{
			name: "user of another server", args: []string{"user", "create", "@dave:elsewhere.org", "--password-stdin"}, stdin: "longpassword1\n",
			wantErr: "not on this server", wantCode: 1,
		},
		{
			name: "reset password", args: []string{"user", "reset-password", "alice", "--password-stdin"}, stdin: "newpassword22\n",
			wantOut: "Password of @alice:example.org changed",
			check: func(t *testing.T) {
				checkPassword("alice", "newpassword22", true)(t)
				checkPassword("alice", "longpassword1", false)(t)
			},
		},
		{
			name: "reset to a short password", args: []string{"user", "reset-password", "alice", "--password-stdin"}, stdin: "short\n",
			wantErr: "at least 8 characters", wantCode: 1,
			check: checkPassword("alice", "newpassword22", true),
		},
		{
			name: "reset unknown user", args: []string{"user", "reset-password", "zed", "--password-stdin"}, stdin: "newpassword22\n",
			wantErr: "no such user @zed:example.org", wantCode: 1,
		},
		{
			name: "deactivate", args: []string{"user", "deactivate", "alice"},
			wantOut: "Deactivated @alice:example.org",
			check:   checkUser("alice", true, true),
		},
		{name: "deactivate again", args: []string{"user", "deactivate", "alice"}, wantErr: "@alice:example.org is deactivated", wantCode: 1},
		{
			name: "reset deactivated user", args: []string{"user", "reset-password", "alice", "--password-stdin"}, stdin: "newpassword33\n",
			wantErr: "is deactivated", wantCode: 1,
		},
		{
			name: "recreate deactivated user", args: []string{"user", "create", "alice", "--password-stdin"}, stdin: "longpassword1\n",
			wantErr: "already taken", wantCode: 1,
		},
		{name: "deactivate unknown user", args: []string{"user", "deactivate", "zed"}, wantErr: "no such user @zed:example.org", wantCode: 1},
		{
			name: "deactivate with erase", args: []string{"user", "deactivate", "--erase", "bob"},
			wantOut: "Deactivated @bob:example.org",
			check: func(t *testing.T) {
				_, db := openAccounts(t, path, overrides)
				if u, err := db.User(t.Context(), "bob"); err != nil || !u.Deactivated() || !u.Erased {
					t.Errorf("bob: %+v, %v; want deactivated and erased", u, err)
				}
			},
		},
	}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			r := invoke(t, invocation{stdin: st.stdin}, append(st.args, common...)...)
			if st.wantErr == "" {
				if r.err != nil {
					t.Fatalf("%v\nstderr:\n%s", r.err, r.stderr)
				}
				if !strings.Contains(r.stdout, st.wantOut) {
					t.Errorf("stdout %q, want it to contain %q", r.stdout, st.wantOut)
				}
			} else {
				if r.err == nil || !strings.Contains(r.err.Error(), st.wantErr) {
					t.Errorf("error %v, want one containing %q", r.err, st.wantErr)
				}
				if r.code() != st.wantCode {
					t.Errorf("exit code %d, want %d", r.code(), st.wantCode)
				}
			}
			if st.check != nil {
				st.check(t)
			}
		})
		if !ok {
			// Later steps depend on this one.
			return
		}
	}
}

// getVersions checks that the client API answers at addr.
func getVersions(t *testing.T, addr string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/_matrix/client/versions", nil)
	if err != nil {
		t.Error(err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET /versions: %v", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"versions"`)) {
		t.Errorf("GET /versions: %s %s", resp.Status, body)
	}
}

// serve runs the server until it is ready, checks it answers, and stops
// it, returning what run printed.
func serve(t *testing.T, getenv map[string]string, args ...string) result {
	t.Helper()
	var readyAddr string
	r := invoke(t, invocation{getenv: getenv, ready: func(addr string) {
		readyAddr = addr
		getVersions(t, addr)
	}}, args...)
	if r.err != nil {
		t.Fatalf("serve: %v\nstderr:\n%s", r.err, r.stderr)
	}
	if readyAddr == "" {
		t.Fatal("serve returned without calling ready")
	}
	if !strings.Contains(r.stderr, "Veche stopped") {
		t.Errorf("no graceful shutdown logged; stderr:\n%s", r.stderr)
	}
	return r
}

func TestServeFirstStartAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "veche.yaml")
	args := []string{"serve", "--config", path, "--listen-client", "127.0.0.1:0", "--listen-federation", "127.0.0.1:0", "--set", "password.argon2.memory_kib=64"}

	first := serve(t, nil, args...)
	for _, want := range []string{"Created " + path, `Veche is running for server name "localhost"`, "veche user create alice --admin --config " + path} {
		if !strings.Contains(first.stdout, want) {
			t.Errorf("first start stdout lacks %q:\n%s", want, first.stdout)
		}
	}
	files := map[string]os.FileMode{"veche.yaml": 0o600, "veche.signing.key": 0o600, "veche.db": 0}
	for name, mode := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("first start did not create %s: %v", name, err)
			continue
		}
		if mode != 0 && fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	cfg, unknown, err := config.Load(path, nil)
	if err != nil || len(unknown) != 0 {
		t.Fatalf("Load of the created config: %v (unknown %q)", err, unknown)
	}
	if cfg.ServerName != "localhost" || cfg.Registration.SharedSecret == "" {
		t.Errorf("created config: server_name %q, shared_secret %q", cfg.ServerName, cfg.Registration.SharedSecret)
	}
	configBefore := readFile(t, path)
	keyBefore := readFile(t, filepath.Join(dir, "veche.signing.key"))

	// serve is the default command.
	second := serve(t, nil, args[1:]...)
	if strings.Contains(second.stdout, "Created") || strings.Contains(second.stdout, "Veche is running") {
		t.Errorf("second start printed first-start text:\n%s", second.stdout)
	}
	if !bytes.Equal(readFile(t, path), configBefore) {
		t.Error("second start changed the config")
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "veche.signing.key")), keyBefore) {
		t.Error("second start changed the signing key")
	}
}

// The server name and database of a config created on first start come
// from the flags or the environment, so that the admin commands, which
// read only the file, agree with the server.
func TestServeFirstStartSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		flags          []string
		getenv         map[string]string
		wantServerName string
		wantDB         bool // database.url is the test database
	}{
		{name: "flag", flags: []string{"--server-name", "flag.example"}, getenv: map[string]string{"VECHE_SERVER_NAME": "env.example"}, wantServerName: "flag.example"},
		{name: "environment", getenv: map[string]string{"VECHE_SERVER_NAME": "env.example"}, wantServerName: "env.example"},
		{name: "database flag", flags: []string{"--server-name", "db.example", "--database-url", "TESTDB"}, wantServerName: "db.example", wantDB: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "veche.yaml")
			var dbURL string
			if tt.wantDB {
				dbURL = testdb.URL(t)
			}
			flags := make([]string, len(tt.flags))
			for i, f := range tt.flags {
				flags[i] = strings.ReplaceAll(f, "TESTDB", dbURL)
			}
			serve(t, tt.getenv, append([]string{"serve", "--config", path, "--listen-client", "127.0.0.1:0", "--listen-federation", "127.0.0.1:0", "--set", "password.argon2.memory_kib=64"}, flags...)...)
			cfg, _, err := config.Load(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName != tt.wantServerName {
				t.Errorf("server_name = %q, want %q", cfg.ServerName, tt.wantServerName)
			}
			if !tt.wantDB {
				return
			}
			if cfg.Database.URL != dbURL {
				t.Fatalf("database.url = %q, want %q", cfg.Database.URL, dbURL)
			}
			// Without the flag, user create must reach the server's database.
			runOK(t, "longpassword1\n", append([]string{"user", "create", "alice", "--password-stdin", "--config", path}, fastHashing...)...)
			_, db := openAccounts(t, path, nil)
			if _, err := db.User(t.Context(), "alice"); err != nil {
				t.Errorf("alice is not in the server's database: %v", err)
			}
		})
	}
}

func TestServeRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		setup      func(t *testing.T, path string)
		flags      []string
		wantErr    string
		wantNoFile bool // the config file must not have been created
	}{
		{name: "invalid server name", flags: []string{"--server-name", "a b"}, wantErr: "server_name", wantNoFile: true},
		{name: "invalid database flag", flags: []string{"--database-url", "mysql://db"}, wantErr: "database.url", wantNoFile: true},
		{name: "invalid listen flag", flags: []string{"--listen-client", "nowhere"}, wantErr: "listen.client"},
		{
			name: "invalid config",
			setup: func(t *testing.T, path string) {
				runOK(t, "", "generate-config", "--server-name", "example.org", "--output", path)
				replaceIn(t, path, "format: text", "format: xml")
			},
			flags:   []string{"--listen-client", "127.0.0.1:0", "--listen-federation", "127.0.0.1:0"},
			wantErr: "log.format",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "veche.yaml")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			r := invoke(t, invocation{ready: func(string) { t.Error("ready was called") }}, append([]string{"serve", "--config", path}, tt.flags...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("serve: %v, want an error containing %q", r.err, tt.wantErr)
			}
			if exists, _ := config.Exists(path); tt.wantNoFile && exists {
				t.Errorf("a config was written although serve refused")
			}
		})
	}
}
