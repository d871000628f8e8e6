package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"text/template"
)

// GenerateOptions fills in the values a new config file needs.
type GenerateOptions struct {
	ServerName string
	// DatabaseURL defaults to an SQLite file next to the config.
	DatabaseURL string
}

var configTemplate = template.Must(template.New("veche.yaml").Parse(`# Veche configuration.
#
# Every key can also be set from the environment as VECHE_ + the key path
# upper-cased with "." replaced by "_" (registration.enabled becomes
# VECHE_REGISTRATION_ENABLED). Environment variables override this file;
# command-line flags override both. Relative paths resolve against the
# directory of this file.

# The domain part of every user ID on this server (@alice:example.org).
# It cannot be changed once users exist.
server_name: {{ printf "%q" .ServerName }}

# The URL clients use to reach this server, announced in
# /.well-known/matrix/client. Empty: http://<listen.client>/.
public_baseurl: ""

# The ed25519 key that signs this server's events and federation requests.
# Created on first start if missing. Keep it secret and back it up.
signing_key_path: veche.signing.key

# Public halves of signing keys this server used before (Synapse's format),
# kept so that other servers can still check what those keys signed.
# "veche generate-keys --rotate" moves the current key here, e.g.
#   "ed25519:a_Old1": {key: "<base64 public key>", expired_ts: 1767225600000}
old_signing_keys: {}

database:
  # sqlite://file.db (relative to this file), sqlite:///absolute/path.db,
  # or postgres://user:password@host:5432/dbname?sslmode=disable
  url: {{ printf "%q" .DatabaseURL }}
  # Connection pool size (PostgreSQL; SQLite uses one writer plus readers).
  max_open_conns: 20

listen:
  # host:port of the client API.
  client: 127.0.0.1:8008
  # host:port for /metrics (Prometheus) and /health. Empty disables it.
  # Keep it on a private address.
  metrics: ""
  # Take the client address from X-Forwarded-For. Enable only behind a
  # reverse proxy that sets it.
  trust_forwarded_for: false
  # host:port of the TLS federation listener (Server-Server API and
  # /_matrix/key). Other servers find it through server_name (see
  # federation.hosts and well_known.server). Empty disables federation.
  federation: 127.0.0.1:8448

registration:
  # Allow anyone who can reach the server to create an account.
  enabled: false
  # When set, registering requires this token (m.login.registration_token).
  token: ""
  # When set, enables /_synapse/admin/v1/register (nonce + HMAC), as used
  # by register_new_matrix_user and other provisioning tools.
  shared_secret: {{ printf "%q" .SharedSecret }}
  # Allow guest accounts (kind=guest).
  allow_guests: false
  # Localparts that cannot be registered through the API.
  reserved_localparts: [admin, administrator, root, system, server, support, security, abuse, postmaster, hostmaster, webmaster, noreply, veche]

password:
  # Shortest password accepted on registration and password change.
  min_length: 8
  # argon2id cost for new password hashes.
  argon2:
    memory_kib: 19456
    iterations: 2
    parallelism: 1

auth:
  # Lifetime of access tokens issued with a refresh token.
  access_token_lifetime: 5m
  # Lifetime of refresh tokens; 0s means they do not expire.
  refresh_token_lifetime: 0s

log:
  # trace, debug, info, warn or error.
  level: info
  # text or json.
  format: text

rate_limits:
  enabled: true
  # Login attempts per client address.
  login: {per_second: 0.5, burst: 10}
  # Failed logins per account.
  login_failures: {per_second: 0.05, burst: 5}
  # Registration requests per client address.
  register: {per_second: 0.17, burst: 10}
  # Username availability and registration token checks per address.
  username_check: {per_second: 2, burst: 30}

well_known:
  # When set (host:port), served as /.well-known/matrix/server to delegate
  # federation to another host.
  server: ""

tls:
  # Certificate and key of the federation listener (PEM). When neither
  # file exists, a self-signed pair for server_name is made on first start:
  # fine behind a TLS-terminating proxy or between servers that set
  # federation.insecure_skip_verify, not for the public federation.
  cert_path: veche.tls.crt
  key_path: veche.tls.key

federation:
  # Server name -> host:port of its federation listener, overriding
  # discovery (.well-known, SRV, port 8448). For private deployments.
  hosts: {}
  # Accept peers whose certificates do not verify (self-signed).
  insecure_skip_verify: false
  # Let outbound federation reach loopback and private addresses. Off, a
  # remote name that resolves to such an address is refused (SSRF).
  allow_private_networks: false
  # Servers (or globs like "*.example.org") to refuse both ways.
  deny_servers: []
  # Largest inbound federation request body, in bytes.
  max_request_bytes: 4194304
  # Inbound requests per origin server.
  rate_limit: {per_second: 50, burst: 200}
  # Notaries asked for a server's keys when it cannot be reached, e.g.
  #   - server_name: matrix.org
  #     verify_keys: {"ed25519:a_RXGa": "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"}
  trusted_key_servers: []

presence:
  # Track whether users are online and share it with the users (and
  # servers) sharing a room with them. Off, clients may still set it but
  # nobody sees it, which saves work on big servers.
  enabled: true

# Largest request body accepted on the client API, in bytes.
max_request_bytes: 1048576

# How long in-flight requests may run after SIGTERM before shutdown.
shutdown_timeout: 10s
`))

// Generate renders a commented config file. A fresh shared secret is
// written so that operators can provision users with the usual tools.
func Generate(opts GenerateOptions) ([]byte, error) {
	if err := ValidateServerName(opts.ServerName); err != nil {
		return nil, fmt.Errorf("server_name: %w", err)
	}
	if opts.DatabaseURL == "" {
		opts.DatabaseURL = "sqlite://veche.db"
	}
	// A file that Load would refuse is no use to the operator.
	if _, _, err := (Database{URL: opts.DatabaseURL}).Parse(""); err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err := configTemplate.Execute(&buf, struct {
		GenerateOptions
		SharedSecret string
	}{opts, base64.RawURLEncoding.EncodeToString(secret)})
	return buf.Bytes(), err
}
