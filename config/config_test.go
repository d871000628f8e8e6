package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// writeConfig writes a config file into a fresh directory and returns its
// path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "veche.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Load precedence is file < environment < overrides. These cases set
// environment variables, so neither they nor their parent run in parallel.
func TestLoadPrecedence(t *testing.T) {
	const file = `
server_name: file.example
registration:
  enabled: false
listen:
  client: 127.0.0.1:1111
rate_limits:
  login: {per_second: 1, burst: 3}
log:
  level: debug
auth:
  access_token_lifetime: 10m
`
	tests := []struct {
		name      string
		env       map[string]string
		overrides map[string]any
		check     func(t *testing.T, c *Config)
	}{
		{
			name: "file over defaults",
			check: func(t *testing.T, c *Config) {
				eq(t, "server_name", c.ServerName, "file.example")
				eq(t, "registration.enabled", c.Registration.Enabled, false)
				eq(t, "listen.client", c.Listen.Client, "127.0.0.1:1111")
				eq(t, "rate_limits.login", c.RateLimits.Login, Rate{PerSecond: 1, Burst: 3})
				eq(t, "log", c.Log, Log{Level: "debug", Format: "text"})
				eq(t, "auth.access_token_lifetime", c.Auth.AccessTokenLifetime, 10*time.Minute)
				// Keys absent from the file keep their defaults.
				eq(t, "rate_limits.register", c.RateLimits.Register, Rate{PerSecond: 0.17, Burst: 10})
				eq(t, "database.max_open_conns", c.Database.MaxOpenConns, 20)
				eq(t, "password.argon2", c.Password.Argon2, Argon2{MemoryKiB: 19456, Iterations: 2, Parallelism: 1})
				eq(t, "shutdown_timeout", c.ShutdownTimeout, 10*time.Second)
				eq(t, "max_request_bytes", c.MaxRequestBytes, int64(1<<20))
				eq(t, "registration.reserved_localparts[0]", c.Registration.ReservedLocalparts[0], "admin")
			},
		},
		{
			name: "environment over file",
			env: map[string]string{
				"VECHE_REGISTRATION_ENABLED":    "true",
				"VECHE_LISTEN_CLIENT":           "127.0.0.1:2222",
				"VECHE_RATE_LIMITS_LOGIN_BURST": "7",
				"VECHE_SHUTDOWN_TIMEOUT":        "3s",
				"VECHE_LOG_FORMAT":              "json",
			},
			check: func(t *testing.T, c *Config) {
				eq(t, "registration.enabled", c.Registration.Enabled, true)
				eq(t, "listen.client", c.Listen.Client, "127.0.0.1:2222")
				eq(t, "rate_limits.login.burst", c.RateLimits.Login.Burst, 7)
				// The sibling from the same file mapping is untouched.
				eq(t, "rate_limits.login.per_second", c.RateLimits.Login.PerSecond, 1.0)
				eq(t, "shutdown_timeout", c.ShutdownTimeout, 3*time.Second)
				eq(t, "log", c.Log, Log{Level: "debug", Format: "json"})
			},
		},
		{
			name: "overrides over environment and file",
			env: map[string]string{
				"VECHE_REGISTRATION_ENABLED":    "true",
				"VECHE_LISTEN_CLIENT":           "127.0.0.1:2222",
				"VECHE_RATE_LIMITS_LOGIN_BURST": "7",
			},
			// Flag values arrive as strings.
			overrides: map[string]any{
				"listen.client":                    "127.0.0.1:3333",
				"rate_limits.login.burst":          "9",
				"log.level":                        "warn",
				"password.argon2.memory_kib":       "64",
				"registration.reserved_localparts": "alpha,beta",
			},
			check: func(t *testing.T, c *Config) {
				eq(t, "registration.enabled", c.Registration.Enabled, true)
				eq(t, "listen.client", c.Listen.Client, "127.0.0.1:3333")
				eq(t, "rate_limits.login.burst", c.RateLimits.Login.Burst, 9)
				eq(t, "log.level", c.Log.Level, "warn")
				eq(t, "password.argon2.memory_kib", c.Password.Argon2.MemoryKiB, uint32(64))
				if !slices.Equal(c.Registration.ReservedLocalparts, []string{"alpha", "beta"}) {
					t.Errorf("registration.reserved_localparts = %q, want [alpha beta]", c.Registration.ReservedLocalparts)
				}
			},
		},
		{
			name: "environment sets a key the file lacks",
			env:  map[string]string{"VECHE_WELL_KNOWN_SERVER": "matrix.example:443"},
			check: func(t *testing.T, c *Config) {
				eq(t, "well_known.server", c.WellKnown.Server, "matrix.example:443")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := writeConfig(t, file)
			c, unknown, err := Load(path, tt.overrides)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(unknown) != 0 {
				t.Errorf("unknown keys %q, want none", unknown)
			}
			eq(t, "Dir", c.Dir, filepath.Dir(path))
			tt.check(t, c)
		})
	}
}

// An invalid value coming from the environment is reported under its key
// path, not the variable name, so that the message matches the file.
func TestLoadEnvironmentErrorNamesKey(t *testing.T) {
	t.Setenv("VECHE_LOG_LEVEL", "chatty")
	_, _, err := Load(writeConfig(t, "server_name: example.org\n"), nil)
	if err == nil || !strings.Contains(err.Error(), `log.level: `) || !strings.Contains(err.Error(), `"chatty"`) {
		t.Fatalf("Load: got %v, want an error naming log.level and the value", err)
	}
}

func TestLoadErrorsNameKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		file      string
		overrides map[string]any
		wantKeys  []string
	}{
		{name: "log level", file: "log: {level: loud}", wantKeys: []string{"log.level"}},
		{name: "log format", file: "log: {format: xml}", wantKeys: []string{"log.format"}},
		{name: "database scheme", file: "database: {url: 'mysql://db/veche'}", wantKeys: []string{"database.url"}},
		{name: "sqlite query", file: "database: {url: 'sqlite://veche.db?mode=ro'}", wantKeys: []string{"database.url"}},
		{name: "pool size", file: "database: {max_open_conns: 0}", wantKeys: []string{"database.max_open_conns"}},
		{name: "listen without port", file: "listen: {client: localhost}", wantKeys: []string{"listen.client"}},
		{name: "listen empty", file: "listen: {client: ''}", wantKeys: []string{"listen.client"}},
		{name: "listen port range", file: "listen: {client: '127.0.0.1:70000'}", wantKeys: []string{"listen.client"}},
		{name: "metrics listen", file: "listen: {metrics: nope}", wantKeys: []string{"listen.metrics"}},
		{name: "server name", file: "server_name: 'a b'", wantKeys: []string{"server_name"}},
		{name: "empty server name", file: "server_name: ''", wantKeys: []string{"server_name"}},
		{name: "public base url", file: "public_baseurl: matrix.example.org", wantKeys: []string{"public_baseurl"}},
		{name: "signing key path", file: "signing_key_path: ''", wantKeys: []string{"signing_key_path"}},
		{name: "token without registration", file: "registration: {token: abc}", wantKeys: []string{"registration.token"}},
		{name: "token grammar", file: "registration: {enabled: true, token: 'has space'}", wantKeys: []string{"registration.token"}},
		{name: "reserved localpart case", file: "registration: {reserved_localparts: [admin, Root]}", wantKeys: []string{"registration.reserved_localparts[1]"}},
		{name: "min length", file: "password: {min_length: -1}", wantKeys: []string{"password.min_length"}},
		{name: "argon2 iterations", file: "password: {argon2: {iterations: 0}}", wantKeys: []string{"password.argon2.iterations"}},
		{name: "argon2 memory", file: "password: {argon2: {memory_kib: 16, parallelism: 4}}", wantKeys: []string{"password.argon2.memory_kib"}},
		{name: "argon2 parallelism", file: "password: {argon2: {parallelism: 0}}", wantKeys: []string{"password.argon2.parallelism"}},
		{name: "access token lifetime", file: "auth: {access_token_lifetime: 1s}", wantKeys: []string{"auth.access_token_lifetime"}},
		{name: "refresh token lifetime", file: "auth: {refresh_token_lifetime: -1s}", wantKeys: []string{"auth.refresh_token_lifetime"}},
		{name: "rate per second", file: "rate_limits: {login: {per_second: 0}}", wantKeys: []string{"rate_limits.login.per_second"}},
		{name: "rate burst", file: "rate_limits: {username_check: {burst: 0}}", wantKeys: []string{"rate_limits.username_check.burst"}},
		{name: "well-known server", file: "well_known: {server: 'x:'}", wantKeys: []string{"well_known.server"}},
		{name: "max request bytes", file: "max_request_bytes: 10", wantKeys: []string{"max_request_bytes"}},
		{name: "shutdown timeout", file: "shutdown_timeout: 0s", wantKeys: []string{"shutdown_timeout"}},
		{name: "old key ID", file: `old_signing_keys: {"rsa:Ab": {key: "` + testPub + `", expired_ts: 1}}`, wantKeys: []string{"old_signing_keys.rsa:Ab"}},
		{name: "old key not base64", file: `old_signing_keys: {"ed25519:Ab": {key: "!!", expired_ts: 1}}`, wantKeys: []string{"old_signing_keys.ed25519:Ab.key"}},
		{name: "old key length", file: `old_signing_keys: {"ed25519:Ab": {key: "AAAA", expired_ts: 1}}`, wantKeys: []string{"old_signing_keys.ed25519:Ab.key"}},
		{name: "old key expiry", file: `old_signing_keys: {"ed25519:Ab": {key: "` + testPub + `"}}`, wantKeys: []string{"old_signing_keys.ed25519:Ab.expired_ts"}},
		{name: "trusted key", file: `federation: {trusted_key_servers: [{server_name: n.org, verify_keys: {"ed25519:Ab": "AAAA"}}]}`, wantKeys: []string{"federation.trusted_key_servers[0].verify_keys.ed25519:Ab"}},
		{name: "override", file: "", overrides: map[string]any{"listen.client": "bad"}, wantKeys: []string{"listen.client"}},
		{
			name: "several at once",
			file: `
server_name: "a b"
log: {level: loud}
database: {url: "mysql://db/veche"}
listen: {client: nope}
rate_limits: {login: {per_second: 0}, register: {per_second: -1}}
`,
			wantKeys: []string{"database.url", "listen.client", "log.level", "rate_limits.login.per_second", "rate_limits.register.per_second", "server_name"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, _, err := Load(writeConfig(t, tt.file), tt.overrides)
			if err == nil {
				t.Fatalf("Load succeeded, want errors for %q", tt.wantKeys)
			}
			if cfg != nil {
				t.Errorf("Load returned a config along with an error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Load error %T (%v), want Errors", err, err)
			}
			var gotKeys []string
			for _, e := range errs {
				k, _, ok := strings.Cut(e, ": ")
				if !ok {
					t.Errorf("error %q does not start with a key path", e)
				}
				gotKeys = append(gotKeys, k)
			}
			if !slices.Equal(gotKeys, tt.wantKeys) {
				t.Errorf("errors name %q, want %q; errors:\n%v", gotKeys, tt.wantKeys, err)
			}
			for _, k := range tt.wantKeys {
				if !strings.Contains(err.Error(), "\n  "+k+": ") {
					t.Errorf("message does not list %s on its own line:\n%v", k, err)
				}
			}
		})
	}
}

// Values of the wrong type fail before Verify; the message must still say
// which key.
func TestLoadTypeErrorNamesKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file      string
		overrides map[string]any
		key       string
	}{
		{file: "database: {max_open_conns: lots}", key: "database.max_open_conns"},
		{file: "shutdown_timeout: soon", key: "shutdown_timeout"},
		{file: "password: {argon2: {parallelism: 300}}", key: "password.argon2.parallelism"},
		{file: "password: {argon2: {iterations: -1}}", key: "password.argon2.iterations"},
		{file: "password: {argon2: {memory_kib: 4294967296}}", key: "password.argon2.memory_kib"},
		{file: "password: {argon2: {memory_kib: -1.5}}", key: "password.argon2.memory_kib"},
		{file: "registration: {enabled: maybe}", key: "registration.enabled"},
		{file: "shutdown_timeout: 30", key: "shutdown_timeout"},
		{file: "auth: {refresh_token_lifetime: 86400}", key: "auth.refresh_token_lifetime"},
		{overrides: map[string]any{"password.argon2.parallelism": "300"}, key: "password.argon2.parallelism"},
		{overrides: map[string]any{"password.argon2.iterations": "-1"}, key: "password.argon2.iterations"},
		{overrides: map[string]any{"shutdown_timeout": "30"}, key: "shutdown_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			_, _, err := Load(writeConfig(t, tt.file), tt.overrides)
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("Load: got %v, want an error naming %s", err, tt.key)
			}
		})
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		file      string
		overrides map[string]any
		want      []string
	}{
		{name: "none", file: "server_name: example.org\n", want: nil},
		{
			name: "misspelt and invented keys",
			file: `
bogus: 1
registration:
  enabeld: true
rate_limits:
  login: {per_second: 1, burts: 2}
zzz: {nested: true}
`,
			want: []string{"bogus", "rate_limits.login.burts", "registration.enabeld", "zzz"},
		},
		{name: "override", file: "", overrides: map[string]any{"log.levle": "debug"}, want: []string{"log.levle"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, unknown, err := Load(writeConfig(t, tt.file), tt.overrides)
			if err != nil {
				t.Fatalf("Load: %v (unknown keys are not errors)", err)
			}
			if !slices.Equal(unknown, tt.want) {
				t.Errorf("unknown = %q, want %q", unknown, tt.want)
			}
			// The misspelt key must not have set the real one.
			if cfg.Registration.Enabled {
				t.Errorf("registration.enabled = true from a misspelt key")
			}
		})
	}
}

// Unknown keys are still reported when the config is otherwise invalid, so
// that a typo behind the error is visible.
func TestLoadUnknownKeysWithErrors(t *testing.T) {
	t.Parallel()
	_, unknown, err := Load(writeConfig(t, "log: {levle: debug, level: loud}\n"), nil)
	if err == nil {
		t.Fatal("Load succeeded, want a log.level error")
	}
	if !slices.Equal(unknown, []string{"log.levle"}) {
		t.Errorf("unknown = %q, want [log.levle]", unknown)
	}
}

func TestLoadFileProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	if _, _, err := Load(missing, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of a missing file: got %v, want an error naming the path", err)
	}
	broken := writeConfig(t, "server_name: [unclosed\n")
	if _, _, err := Load(broken, nil); err == nil || !strings.Contains(err.Error(), broken) {
		t.Errorf("Load of broken YAML: got %v, want an error naming the path", err)
	}
	// Bounds that fit are fine, and a bare zero duration needs no unit.
	c, _, err := Load(writeConfig(t, "password: {argon2: {parallelism: 255, memory_kib: 4096}}\nauth: {refresh_token_lifetime: 0}\n"), nil)
	if err != nil {
		t.Errorf("Load with in-range values: %v", err)
	} else if c.Password.Argon2.Parallelism != 255 || c.Password.Argon2.MemoryKiB != 4096 || c.Auth.RefreshTokenLifetime != 0 {
		t.Errorf("argon2 = %+v, refresh_token_lifetime = %s", c.Password.Argon2, c.Auth.RefreshTokenLifetime)
	}
	// An empty file is all defaults, which are valid.
	if _, _, err := Load(writeConfig(t, ""), nil); err != nil {
		t.Errorf("Load of an empty file: %v", err)
	}
}

func TestExists(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "")
	tests := []struct {
		path string
		want bool
	}{
		{path, true},
		{filepath.Join(filepath.Dir(path), "other.yaml"), false},
	}
	for _, tt := range tests {
		got, err := Exists(tt.path)
		if err != nil || got != tt.want {
			t.Errorf("Exists(%s) = %v, %v; want %v, nil", tt.path, got, err, tt.want)
		}
	}
}

func TestValidateServerName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		valid bool
	}{
		{"matrix.org", true},
		{"matrix.org:8888", true},
		{"1.2.3.4", true},
		{"1.2.3.4:1234", true},
		{"[1234:5678::abcd]", true},
		{"[1234:5678::abcd]:5678", true},
		{"[::ffff:1.2.3.4]", true},
		{"localhost", true},
		{"a-b.example.org.", true},
		{"Matrix.ORG:65535", true},
		{strings.Repeat("a", 255), true},

		{"", false},
		{"a:", false},
		{":80", false},
		{"a b", false},
		{"host:99999", false},
		{"host:65536", false},
		{"host:0", false},
		{"host:+80", false},
		{"host:8a", false},
		{"host:000080", false},
		{"[::1", false},
		{"[::1]:", false},
		{"[::1]x", false},
		{"[::1]:http", false},
		{"[1.2.3.4]", false},
		{"[]", false},
		{"[fe80::1%eth0]", false},
		{"::1", false},
		{"exa_mple.org", false},
		{"example.org/", false},
		{"ünicode.example", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		err := ValidateServerName(tt.name)
		if tt.valid && err != nil {
			t.Errorf("ValidateServerName(%q) = %v, want valid", tt.name, err)
		}
		if !tt.valid && err == nil {
			t.Errorf("ValidateServerName(%q) = nil, want an error", tt.name)
		}
	}
}

func TestDatabaseParse(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(string(filepath.Separator), "srv", "veche")
	tests := []struct {
		url         string
		wantBackend Backend
		wantDSN     string
		wantErr     string // substring; empty means success
	}{
		{url: "sqlite://veche.db", wantBackend: SQLite, wantDSN: filepath.Join(dir, "veche.db")},
		{url: "sqlite://data/veche.db", wantBackend: SQLite, wantDSN: filepath.Join(dir, "data", "veche.db")},
		{url: "sqlite://../veche.db", wantBackend: SQLite, wantDSN: filepath.Join(filepath.Dir(dir), "veche.db")},
		{url: "sqlite:///var/lib/veche/veche.db", wantBackend: SQLite, wantDSN: "/var/lib/veche/veche.db"},
		{url: "postgres://veche:pw@db:5432/veche?sslmode=disable", wantBackend: Postgres, wantDSN: "postgres://veche:pw@db:5432/veche?sslmode=disable"},
		{url: "postgresql://db/veche", wantBackend: Postgres, wantDSN: "postgresql://db/veche"},

		{url: "", wantErr: "must start with sqlite:// or postgres://"},
		{url: "mysql://db/veche", wantErr: "must start with sqlite:// or postgres://"},
		{url: "sqlite:veche.db", wantErr: "must start with sqlite:// or postgres://"},
		{url: "veche.db", wantErr: "must start with sqlite:// or postgres://"},
		{url: "sqlite://veche.db?_journal=wal", wantErr: "no query"},
		{url: "sqlite://veche.db#x", wantErr: "no query"},
		{url: "sqlite://", wantErr: "names no file"},
		{url: "sqlite:///", wantErr: "names no file"},
		{url: "postgres://veche:pw@db:notaport/veche", wantErr: "not a valid URL"},
	}
	for _, tt := range tests {
		backend, dsn, err := Database{URL: tt.url}.Parse(dir)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
			}
			continue
		}
		if err != nil || backend != tt.wantBackend || dsn != tt.wantDSN {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q, nil", tt.url, backend, dsn, err, tt.wantBackend, tt.wantDSN)
		}
	}
}

// Config errors end up in logs and terminals, so they must not carry a
// database password, whichever way the URL is wrong.
func TestDatabasePasswordNotInErrors(t *testing.T) {
	t.Parallel()
	const secret = "s3cretPW"
	urls := []string{
		"postgres://veche:" + secret + "@db:notaport/veche",
		"postgresql://veche:" + secret + "@d b/veche",
		"mysql://veche:" + secret + "@db/veche",
		"mysql://veche:" + secret + "@db:bad/veche",
		"veche:" + secret + "@db/veche",
		"pgsql://veche:" + secret + "@db/veche\x7f",
	}
	for _, u := range urls {
		_, _, err := Database{URL: u}.Parse("")
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", u)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Parse error shows the password: %v", err)
		}
		// The same holds once the error is wrapped by Load.
		_, _, err = Load(writeConfig(t, "database: {url: '"+strings.ReplaceAll(u, "\x7f", "")+"'}\n"), nil)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("Load with database.url %q: got %v, want an error without the password", u, err)
		}
	}
}

func TestDatabaseRedacted(t *testing.T) {
	t.Parallel()
	tests := []struct{ url, want string }{
		{"sqlite://veche.db", "sqlite://veche.db"},
		{"postgres://db/veche", "postgres://db/veche"},
		{"postgres://veche@db/veche", "postgres://veche@db/veche"},
		{"postgres://veche:pw@db/veche?sslmode=disable", "postgres://veche:xxxxx@db/veche?sslmode=disable"},
		{"postgres://veche:pw@db:bad/veche", "postgres://xxxxx@db:bad/veche"},
	}
	for _, tt := range tests {
		if got := (Database{URL: tt.url}).Redacted(); got != tt.want {
			t.Errorf("Redacted(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestPathAndBaseURL(t *testing.T) {
	t.Parallel()
	c := &Config{Dir: "/etc/veche", Listen: Listen{Client: "127.0.0.1:8008"}}
	for p, want := range map[string]string{
		"":                  "",
		"veche.signing.key": "/etc/veche/veche.signing.key",
		"keys/k":            "/etc/veche/keys/k",
		"/var/lib/k":        "/var/lib/k",
	} {
		if got := c.Path(p); got != want {
			t.Errorf("Path(%q) = %q, want %q", p, got, want)
		}
	}
	for base, want := range map[string]string{
		"":                           "http://127.0.0.1:8008/",
		"https://matrix.example.org": "https://matrix.example.org/",
		"https://example.org/m//":    "https://example.org/m/",
	} {
		c.PublicBaseURL = base
		if got := c.BaseURL(); got != want {
			t.Errorf("BaseURL with public_baseurl %q = %q, want %q", base, got, want)
		}
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opts   GenerateOptions
		wantDB string
	}{
		{name: "defaults", opts: GenerateOptions{ServerName: "example.org"}, wantDB: "sqlite://veche.db"},
		{name: "port", opts: GenerateOptions{ServerName: "example.org:8448"}, wantDB: "sqlite://veche.db"},
		{name: "ipv6", opts: GenerateOptions{ServerName: "[::1]:8448"}, wantDB: "sqlite://veche.db"},
		{
			name:   "postgres",
			opts:   GenerateOptions{ServerName: "example.org", DatabaseURL: `postgres://veche:p'w!$%22@db/veche?sslmode=disable&x=1#`},
			wantDB: `postgres://veche:p'w!$%22@db/veche?sslmode=disable&x=1#`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, err := Generate(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			path := writeConfig(t, string(data))
			c, unknown, err := Load(path, nil)
			if err != nil {
				t.Fatalf("Load of the generated file: %v\n%s", err, data)
			}
			if len(unknown) != 0 {
				t.Errorf("generated file has unknown keys %q", unknown)
			}
			eq(t, "server_name", c.ServerName, tt.opts.ServerName)
			eq(t, "database.url", c.Database.URL, tt.wantDB)
			if len(c.Registration.SharedSecret) < 32 {
				t.Errorf("registration.shared_secret = %q, want a long random secret", c.Registration.SharedSecret)
			}
		})
	}
}

func TestGenerateFreshSecret(t *testing.T) {
	t.Parallel()
	secret := func() string {
		data, err := Generate(GenerateOptions{ServerName: "example.org"})
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := Load(writeConfig(t, string(data)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Registration.SharedSecret
	}
	if a, b := secret(), secret(); a == "" || a == b {
		t.Errorf("shared secrets %q and %q, want two different non-empty ones", a, b)
	}
}

func TestGenerateRefusesInvalidInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opts    GenerateOptions
		wantKey string
	}{
		{GenerateOptions{ServerName: ""}, "server_name"},
		{GenerateOptions{ServerName: "a b"}, "server_name"},
		{GenerateOptions{ServerName: "example.org:99999"}, "server_name"},
		// A name with a quote must not break out of the YAML string.
		{GenerateOptions{ServerName: "x\"\ny: z"}, "server_name"},
		{GenerateOptions{ServerName: "example.org", DatabaseURL: "mysql://db/veche"}, "database.url"},
		{GenerateOptions{ServerName: "example.org", DatabaseURL: "sqlite://veche.db?mode=ro"}, "database.url"},
	}
	for _, tt := range tests {
		data, err := Generate(tt.opts)
		if err == nil || data != nil {
			t.Errorf("Generate(%+v) = %d bytes, %v; want an error", tt.opts, len(data), err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.wantKey+": ") {
			t.Errorf("Generate(%+v) error %q does not name %s", tt.opts, err, tt.wantKey)
		}
	}
}

// The generated file is the reference operators read, so it must spell
// out every key and, apart from the per-install values, with its default.
func TestGenerateDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := Generate(GenerateOptions{ServerName: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	file := viper.New()
	file.SetConfigType("yaml")
	if err := file.ReadConfig(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	defaults := viper.New()
	for k, v := range Defaults() {
		defaults.SetDefault(k, v)
	}
	perInstall := map[string]bool{"server_name": true, "registration.shared_secret": true}
	for key := range Defaults() {
		if !file.IsSet(key) {
			t.Errorf("generated config lacks %s", key)
			continue
		}
		if perInstall[key] {
			continue
		}
		// YAML and Go literals differ in type ([]any vs []string) but not
		// in how they print.
		got, want := fmt.Sprint(file.Get(key)), fmt.Sprint(defaults.Get(key))
		if got != want {
			t.Errorf("generated %s = %s, default is %s", key, got, want)
		}
	}
	for _, key := range file.AllKeys() {
		if _, ok := Defaults()[key]; !ok {
			t.Errorf("generated config has %s, which has no default", key)
		}
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestFederationHostsKeepDottedServerNames(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "veche.yaml")
	yaml := "server_name: a.example.org\nfederation:\n  hosts:\n    b.example.org: 127.0.0.1:1234\n    \"c.example.org:8448\": 127.0.0.1:5678\n    \"[::1]:8448\": \"[::1]:9\"\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"b.example.org": "127.0.0.1:1234", "c.example.org:8448": "127.0.0.1:5678", "[::1]:8448": "[::1]:9"}
	if !reflect.DeepEqual(cfg.Federation.Hosts, want) {
		t.Fatalf("hosts = %v, want %v", cfg.Federation.Hosts, want)
	}
}

// testPub is a valid ed25519 public key in unpadded base64.
const testPub = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"

// Key IDs are case-sensitive; viper lower-cases map keys, Load undoes it.
func TestSigningKeyIDsKeepTheirCase(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `
old_signing_keys:
  "ed25519:a_AbCd": {key: "`+testPub+`", expired_ts: 1700000000000}
  ed25519:lower: {key: "`+testPub+`=", expired_ts: 1}
federation:
  trusted_key_servers:
    - server_name: matrix.org
      verify_keys: {"ed25519:a_RXGa": "`+testPub+`"}
`)
	cfg, _, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]OldSigningKey{
		"ed25519:a_AbCd": {Key: testPub, ExpiredTS: 1700000000000},
		"ed25519:lower":  {Key: testPub + "=", ExpiredTS: 1},
	}
	if !reflect.DeepEqual(cfg.OldSigningKeys, want) {
		t.Errorf("old_signing_keys = %v, want %v", cfg.OldSigningKeys, want)
	}
	if got := cfg.Federation.TrustedKeyServers[0].VerifyKeys; !reflect.DeepEqual(got, map[string]string{"ed25519:a_RXGa": testPub}) {
		t.Errorf("verify_keys = %v", got)
	}
	for _, k := range []string{testPub, testPub + "=", strings.NewReplacer("+", "-", "/", "_").Replace(testPub)} {
		if pub, err := DecodePublicKey(k); err != nil || len(pub) != 32 {
			t.Errorf("DecodePublicKey(%q) = %x, %v", k, pub, err)
		}
	}
}
