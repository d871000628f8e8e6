// Package config holds Veche's typed configuration and loads it with viper:
// YAML file < VECHE_* environment < command-line overrides. Every key has a
// default, every value is checked at start, and errors name the key path.
package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where the config lives when --config does not say.
const DefaultPath = "veche.yaml"

// EnvPrefix prefixes every environment variable that sets a key.
const EnvPrefix = "VECHE"

// Config is the whole server configuration.
type Config struct {
	// ServerName is the domain part of every user and room ID this server
	// owns. It cannot change once users exist.
	ServerName string `mapstructure:"server_name"`
	// PublicBaseURL is the URL clients reach the client API at; it is
	// announced in /.well-known/matrix/client.
	PublicBaseURL  string `mapstructure:"public_baseurl"`
	SigningKeyPath string `mapstructure:"signing_key_path"`
	// OldSigningKeys are the public halves of signing keys this server
	// used before, by key ID (Synapse's old_signing_keys). They stay
	// published so that what they signed can still be checked.
	OldSigningKeys map[string]OldSigningKey `mapstructure:"old_signing_keys"`

	Database     Database     `mapstructure:"database"`
	Listen       Listen       `mapstructure:"listen"`
	Registration Registration `mapstructure:"registration"`
	Password     Password     `mapstructure:"password"`
	Auth         Auth         `mapstructure:"auth"`
	Log          Log          `mapstructure:"log"`
	RateLimits   RateLimits   `mapstructure:"rate_limits"`
	WellKnown    WellKnown    `mapstructure:"well_known"`
	TLS          TLS          `mapstructure:"tls"`
	Federation   Federation   `mapstructure:"federation"`
	Presence     Presence     `mapstructure:"presence"`

	// MaxRequestBytes caps the body of any client API request.
	MaxRequestBytes int64 `mapstructure:"max_request_bytes"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after SIGTERM before connections are closed.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`

	// Dir is the directory of the config file; relative paths in the config
	// resolve against it. Not a config key.
	Dir string `mapstructure:"-"`
}

// OldSigningKey is a retired signing key.
type OldSigningKey struct {
	// Key is the base64 ed25519 public key.
	Key string `mapstructure:"key"`
	// ExpiredTS is when the server stopped using the key (ms since the
	// epoch); signatures from later are not accepted.
	ExpiredTS int64 `mapstructure:"expired_ts"`
}

// Database selects and tunes the storage backend.
type Database struct {
	// URL is sqlite://path (relative to the config file) or
	// sqlite:///absolute/path, or a postgres:// URL.
	URL          string `mapstructure:"url"`
	MaxOpenConns int    `mapstructure:"max_open_conns"`
}

// Listen holds listener addresses.
type Listen struct {
	Client string `mapstructure:"client"`
	// Metrics, when set, serves /metrics and /health on its own listener so
	// that it can be kept off the public network.
	Metrics string `mapstructure:"metrics"`
	// TrustForwardedFor makes the client IP come from X-Forwarded-For; only
	// enable it behind a reverse proxy that sets the header.
	TrustForwardedFor bool `mapstructure:"trust_forwarded_for"`
	// Federation is the host:port of the TLS listener for the
	// Server-Server API and /_matrix/key. Empty disables federation.
	Federation string `mapstructure:"federation"`
}

// TLS is the certificate of the federation listener. When neither file
// exists, a self-signed pair for server_name is generated on first start.
type TLS struct {
	CertPath string `mapstructure:"cert_path"`
	KeyPath  string `mapstructure:"key_path"`
}

// Federation controls how this server talks to other servers.
type Federation struct {
	// Hosts maps a server name to the host:port that serves its federation
	// API, overriding discovery (private deployments and tests).
	Hosts map[string]string `mapstructure:"hosts"`
	// InsecureSkipVerify accepts peers with self-signed or otherwise
	// unverifiable certificates.
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`
	// AllowPrivateNetworks lets outbound requests reach loopback, private
	// and link-local addresses (off: SSRF protection).
	AllowPrivateNetworks bool `mapstructure:"allow_private_networks"`
	// DenyServers lists server names (globs such as *.evil.example) this
	// server neither sends to nor accepts anything from.
	DenyServers []string `mapstructure:"deny_servers"`
	// MaxRequestBytes caps the body of an inbound federation request.
	MaxRequestBytes int64 `mapstructure:"max_request_bytes"`
	// RateLimit limits inbound requests per origin server.
	RateLimit Rate `mapstructure:"rate_limit"`
	// TrustedKeyServers are notaries asked for keys that the owning server
	// cannot give (when it is down).
	TrustedKeyServers []TrustedKeyServer `mapstructure:"trusted_key_servers"`
}

// TrustedKeyServer is a notary and the keys its answers must be signed
// with (key ID → unpadded base64 ed25519 public key).
type TrustedKeyServer struct {
	ServerName string            `mapstructure:"server_name"`
	VerifyKeys map[string]string `mapstructure:"verify_keys"`
}

// Registration controls who can create accounts.
type Registration struct {
	Enabled bool `mapstructure:"enabled"`
	// Token, when set, must be presented (m.login.registration_token).
	Token string `mapstructure:"token"`
	// SharedSecret enables Synapse-compatible /_synapse/admin/v1/register.
	SharedSecret string `mapstructure:"shared_secret"`
	AllowGuests  bool   `mapstructure:"allow_guests"`
	// ReservedLocalparts cannot be registered through the API (operators
	// can still create them with `veche user create`).
	ReservedLocalparts []string `mapstructure:"reserved_localparts"`
}

// Password sets password policy and hashing cost.
type Password struct {
	MinLength int    `mapstructure:"min_length"`
	Argon2    Argon2 `mapstructure:"argon2"`
}

// Argon2 are argon2id parameters for new password hashes.
type Argon2 struct {
	MemoryKiB   uint32 `mapstructure:"memory_kib"`
	Iterations  uint32 `mapstructure:"iterations"`
	Parallelism uint8  `mapstructure:"parallelism"`
}

// Auth controls token lifetimes.
type Auth struct {
	// AccessTokenLifetime applies to access tokens issued together with a
	// refresh token; tokens without one never expire.
	AccessTokenLifetime time.Duration `mapstructure:"access_token_lifetime"`
	// RefreshTokenLifetime: 0 means refresh tokens never expire.
	RefreshTokenLifetime time.Duration `mapstructure:"refresh_token_lifetime"`
}

// Log configures logrus.
type Log struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// RateLimits configures token-bucket limits per client address or account.
type RateLimits struct {
	Enabled bool `mapstructure:"enabled"`
	// Login limits login attempts per client address.
	Login Rate `mapstructure:"login"`
	// LoginFailures limits failed logins per account.
	LoginFailures Rate `mapstructure:"login_failures"`
	// Register limits registration requests per client address.
	Register Rate `mapstructure:"register"`
	// UsernameCheck limits username availability and registration token
	// checks per client address (clients call them as the user types).
	UsernameCheck Rate `mapstructure:"username_check"`
}

// Rate is a token bucket: PerSecond refill, Burst capacity.
type Rate struct {
	PerSecond float64 `mapstructure:"per_second"`
	Burst     int     `mapstructure:"burst"`
}

// Presence controls presence (online/offline status).
type Presence struct {
	// Enabled tracks presence and exchanges it with other servers. Off,
	// clients may still set it but nobody sees it (Synapse's
	// use_presence): it saves the work presence costs on big servers.
	Enabled bool `mapstructure:"enabled"`
}

// WellKnown controls the /.well-known/matrix documents.
type WellKnown struct {
	// Server, when set (host:port), is served as /.well-known/matrix/server
	// to delegate federation.
	Server string `mapstructure:"server"`
}

// Defaults returns every key with its default value, keyed by path. Every
// key must be here: viper only maps VECHE_* variables onto known keys.
func Defaults() map[string]any {
	return map[string]any{
		"server_name":                           "localhost",
		"public_baseurl":                        "",
		"signing_key_path":                      "veche.signing.key",
		"old_signing_keys":                      map[string]any{},
		"database.url":                          "sqlite://veche.db",
		"database.max_open_conns":               20,
		"listen.client":                         "127.0.0.1:8008",
		"listen.metrics":                        "",
		"listen.trust_forwarded_for":            false,
		"registration.enabled":                  false,
		"registration.token":                    "",
		"registration.shared_secret":            "",
		"registration.allow_guests":             false,
		"registration.reserved_localparts":      []string{"admin", "administrator", "root", "system", "server", "support", "security", "abuse", "postmaster", "hostmaster", "webmaster", "noreply", "veche"},
		"password.min_length":                   8,
		"password.argon2.memory_kib":            19456,
		"password.argon2.iterations":            2,
		"password.argon2.parallelism":           1,
		"auth.access_token_lifetime":            "5m",
		"auth.refresh_token_lifetime":           "0s",
		"log.level":                             "info",
		"log.format":                            "text",
		"rate_limits.enabled":                   true,
		"rate_limits.login.per_second":          0.5,
		"rate_limits.login.burst":               10,
		"rate_limits.login_failures.per_second": 0.05,
		"rate_limits.login_failures.burst":      5,
		"rate_limits.register.per_second":       0.17,
		"rate_limits.register.burst":            10,
		"rate_limits.username_check.per_second": 2,
		"rate_limits.username_check.burst":      30,
		"well_known.server":                     "",
		"listen.federation":                     "127.0.0.1:8448",
		"tls.cert_path":                         "veche.tls.crt",
		"tls.key_path":                          "veche.tls.key",
		"federation.hosts":                      map[string]string{},
		"federation.insecure_skip_verify":       false,
		"federation.allow_private_networks":     false,
		"federation.deny_servers":               []string{},
		"federation.max_request_bytes":          4 << 20,
		"federation.rate_limit.per_second":      50,
		"federation.rate_limit.burst":           200,
		"federation.trusted_key_servers":        []any{},
		"presence.enabled":                      true,
		"max_request_bytes":                     1 << 20,
		"shutdown_timeout":                      "10s",
	}
}

// Errors collects every problem found in a config, each naming its key.
type Errors []string

// Add records a problem with the key at path.
func (e *Errors) Add(path, format string, args ...any) {
	*e = append(*e, path+": "+fmt.Sprintf(format, args...))
}

func (e Errors) Error() string {
	return "invalid configuration:\n  " + strings.Join(e, "\n  ")
}

// Verify checks every value and returns all problems at once.
func (c *Config) Verify() error {
	var errs Errors
	if err := ValidateServerName(c.ServerName); err != nil {
		errs.Add("server_name", "%v", err)
	}
	if c.PublicBaseURL != "" {
		if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Add("public_baseurl", "must be an absolute http(s) URL, got %q", c.PublicBaseURL)
		}
	}
	if c.SigningKeyPath == "" {
		errs.Add("signing_key_path", "must not be empty")
	}
	for id, k := range c.OldSigningKeys {
		key := "old_signing_keys." + id
		if !ValidKeyID(id) {
			errs.Add(key, "key IDs are ed25519:<version> with a version of letters, digits and '_'")
		}
		if _, err := DecodePublicKey(k.Key); err != nil {
			errs.Add(key+".key", "%v", err)
		}
		if k.ExpiredTS <= 0 {
			errs.Add(key+".expired_ts", "must be a positive timestamp in milliseconds, got %d", k.ExpiredTS)
		}
	}
	if _, _, err := c.Database.Parse(c.Dir); err != nil {
		errs.Add("database.url", "%v", err)
	}
	if c.Database.MaxOpenConns < 1 {
		errs.Add("database.max_open_conns", "must be at least 1, got %d", c.Database.MaxOpenConns)
	}
	checkHostPort(&errs, "listen.client", c.Listen.Client, false)
	checkHostPort(&errs, "listen.metrics", c.Listen.Metrics, true)
	checkHostPort(&errs, "listen.federation", c.Listen.Federation, true)
	if c.Listen.Federation != "" && (c.TLS.CertPath == "" || c.TLS.KeyPath == "") {
		errs.Add("tls.cert_path", "tls.cert_path and tls.key_path must be set when listen.federation is")
	}
	for name, addr := range c.Federation.Hosts {
		if err := ValidateServerName(name); err != nil {
			errs.Add("federation.hosts."+name, "%v", err)
		}
		checkHostPort(&errs, "federation.hosts."+name, addr, false)
	}
	for i, pat := range c.Federation.DenyServers {
		if _, err := path.Match(pat, "x"); err != nil || pat == "" {
			errs.Add(fmt.Sprintf("federation.deny_servers[%d]", i), "must be a server name or glob, got %q", pat)
		}
	}
	if c.Federation.MaxRequestBytes < 64<<10 {
		errs.Add("federation.max_request_bytes", "must be at least 65536, got %d", c.Federation.MaxRequestBytes)
	}
	if r := c.Federation.RateLimit; r.PerSecond <= 0 || r.Burst < 1 {
		errs.Add("federation.rate_limit", "per_second must be positive and burst at least 1, got %v/%d", r.PerSecond, r.Burst)
	}
	for i, ks := range c.Federation.TrustedKeyServers {
		key := fmt.Sprintf("federation.trusted_key_servers[%d]", i)
		if err := ValidateServerName(ks.ServerName); err != nil {
			errs.Add(key+".server_name", "%v", err)
		}
		if len(ks.VerifyKeys) == 0 {
			errs.Add(key+".verify_keys", "must list at least one key")
		}
		for id, pub := range ks.VerifyKeys {
			if !ValidKeyID(id) {
				errs.Add(key+".verify_keys."+id, "key IDs are ed25519:<version> with a version of letters, digits and '_'")
			}
			if _, err := DecodePublicKey(pub); err != nil {
				errs.Add(key+".verify_keys."+id, "%v", err)
			}
		}
	}
	if t := c.Registration.Token; t != "" && !validOpaqueToken(t) {
		errs.Add("registration.token", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-' (the spec's opaque identifier grammar)")
	}
	if c.Registration.Token != "" && !c.Registration.Enabled {
		errs.Add("registration.token", "is set but registration.enabled is false, so nobody can use it")
	}
	for i, lp := range c.Registration.ReservedLocalparts {
		if lp == "" || lp != strings.ToLower(lp) {
			errs.Add(fmt.Sprintf("registration.reserved_localparts[%d]", i), "must be a non-empty lower-case localpart, got %q", lp)
		}
	}
	if c.Password.MinLength < 0 {
		errs.Add("password.min_length", "must not be negative")
	}
	a := c.Password.Argon2
	if a.Iterations < 1 {
		errs.Add("password.argon2.iterations", "must be at least 1")
	}
	if a.Parallelism < 1 {
		errs.Add("password.argon2.parallelism", "must be at least 1")
	}
	if a.MemoryKiB < 8*uint32(max(a.Parallelism, 1)) {
		errs.Add("password.argon2.memory_kib", "must be at least 8 × parallelism, got %d", a.MemoryKiB)
	}
	if c.Auth.AccessTokenLifetime < time.Minute/2 {
		errs.Add("auth.access_token_lifetime", "must be at least 30s, got %s", c.Auth.AccessTokenLifetime)
	}
	if c.Auth.RefreshTokenLifetime < 0 {
		errs.Add("auth.refresh_token_lifetime", "must not be negative")
	}
	if _, err := ParseLogLevel(c.Log.Level); err != nil {
		errs.Add("log.level", "%v", err)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		errs.Add("log.format", "must be text or json, got %q", c.Log.Format)
	}
	for name, r := range map[string]Rate{"login": c.RateLimits.Login, "login_failures": c.RateLimits.LoginFailures, "register": c.RateLimits.Register, "username_check": c.RateLimits.UsernameCheck} {
		if r.PerSecond <= 0 {
			errs.Add("rate_limits."+name+".per_second", "must be positive, got %v", r.PerSecond)
		}
		if r.Burst < 1 {
			errs.Add("rate_limits."+name+".burst", "must be at least 1, got %d", r.Burst)
		}
	}
	if c.WellKnown.Server != "" {
		if err := ValidateServerName(c.WellKnown.Server); err != nil {
			errs.Add("well_known.server", "%v", err)
		}
	}
	if c.MaxRequestBytes < 1024 {
		errs.Add("max_request_bytes", "must be at least 1024, got %d", c.MaxRequestBytes)
	}
	if c.ShutdownTimeout <= 0 {
		errs.Add("shutdown_timeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return errs
	}
	return nil
}

// ValidKeyID checks a signing key ID: the spec allows ed25519 keys with a
// version of [a-zA-Z0-9_].
func ValidKeyID(id string) bool {
	version, ok := strings.CutPrefix(id, "ed25519:")
	if !ok || version == "" {
		return false
	}
	for _, r := range version {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// DecodePublicKey reads an ed25519 public key in base64: unpadded as the
// spec writes keys, padded as some tools do, standard or URL-safe.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	trimmed := strings.TrimRight(s, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(trimmed); err == nil {
			if len(b) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("must be a 32-byte ed25519 public key, got %d bytes", len(b))
			}
			return ed25519.PublicKey(b), nil
		}
	}
	return nil, fmt.Errorf("must be base64, got %q", s)
}

func validOpaqueToken(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '~' || r == '-') {
			return false
		}
	}
	return true
}

func checkHostPort(errs *Errors, key, v string, optional bool) {
	if v == "" {
		if !optional {
			errs.Add(key, "must not be empty")
		}
		return
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		errs.Add(key, "must be host:port, got %q", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		errs.Add(key, "port must be 0-65535, got %q", port)
	}
}

// ValidateServerName checks the spec's server name grammar (appendices).
func ValidateServerName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > 255 {
		return errors.New("is longer than 255 characters")
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 {
			return fmt.Errorf("%q has an unclosed IPv6 literal", name)
		}
		host = name[1:end]
		switch rest := name[end+1:]; {
		case rest == "":
		case rest == ":":
			return fmt.Errorf("%q has an empty port", name)
		case strings.HasPrefix(rest, ":"):
			port = rest[1:]
		default:
			return fmt.Errorf("%q has junk after the IPv6 literal", name)
		}
		// A colon tells IPv6 from IPv4: To4 would also reject IPv4-mapped
		// addresses (::ffff:1.2.3.4), which the grammar allows.
		if ip := net.ParseIP(host); ip == nil || !strings.Contains(host, ":") {
			return fmt.Errorf("%q is not a valid IPv6 literal", name)
		}
	} else {
		if i := strings.LastIndex(name, ":"); i >= 0 {
			host, port = name[:i], name[i+1:]
			if port == "" {
				return fmt.Errorf("%q has an empty port", name)
			}
		}
		if host == "" {
			return fmt.Errorf("%q has an empty hostname", name)
		}
		for _, r := range host {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
				return fmt.Errorf("%q may only contain letters, digits, '-' and '.' in its hostname", name)
			}
		}
	}
	if port != "" {
		// Digits only: Atoi alone would take "+80".
		n, err := strconv.Atoi(port)
		if err != nil || len(port) > 5 || strings.Trim(port, "0123456789") != "" || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port", name)
		}
	}
	return nil
}

// Backend names a storage backend.
type Backend string

const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// Parse splits database.url into a backend and its driver DSN: an absolute
// file path for SQLite, the URL itself for PostgreSQL. Relative SQLite
// paths resolve against dir.
func (d Database) Parse(dir string) (Backend, string, error) {
	switch {
	case strings.HasPrefix(d.URL, "sqlite://"):
		p := strings.TrimPrefix(d.URL, "sqlite://")
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			return "", "", fmt.Errorf("sqlite URLs take no query or fragment, got %q", d.URL)
		}
		if p == "" || p == "/" {
			return "", "", fmt.Errorf("sqlite URL %q names no file", d.URL)
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return SQLite, p, nil
	case strings.HasPrefix(d.URL, "postgres://"), strings.HasPrefix(d.URL, "postgresql://"):
		if _, err := url.Parse(d.URL); err != nil {
			// url.Error quotes the whole URL, password included.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return "", "", fmt.Errorf("not a valid URL: %v", err)
		}
		return Postgres, d.URL, nil
	default:
		return "", "", fmt.Errorf("must start with sqlite:// or postgres://, got %q", redactURL(d.URL))
	}
}

// Redacted is the URL with any password hidden, for logs and messages.
func (d Database) Redacted() string { return redactURL(d.URL) }

// redactURL hides a password in a URL so that it can be shown in errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.User != nil {
		return u.Redacted()
	}
	// Unparseable, or parsed without userinfo although there may be one
	// ("user:pw@host" reads as scheme "user"): hide everything before the
	// last '@'. Hiding too much costs nothing in an error message.
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	return s[:start] + "xxxxx" + s[at:]
}

// Path resolves p against the config directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// BaseURL is the public client API URL, derived from the listener when
// public_baseurl is unset.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		return strings.TrimRight(c.PublicBaseURL, "/") + "/"
	}
	return "http://" + c.Listen.Client + "/"
}
