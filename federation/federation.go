// Package federation serves the Server-Server API (/_matrix/federation) and
// the key API (/_matrix/key) on the TLS federation listener, and owns what
// every federation feature shares: X-Matrix request authentication, the
// key ring that checks other servers' signatures (keys cached in the
// database, fetched directly or through trusted notaries), the outbound
// federation client, server ACLs and the deny list.
//
// Endpoints are grouped by spec module, one file each with its own
// registerXRoutes function; routes.go lists them.
package federation

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/config"
	"github.com/veche/veche/e2ee"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/ratelimit"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/internal/version"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

// clientTimeout bounds one outbound federation request (connect, send,
// read the whole answer); callers bound theirs further with contexts.
const clientTimeout = 60 * time.Second

// Deps are what the federation component needs.
type Deps struct {
	DB         *storage.DB
	Config     *config.Config
	ServerName spec.ServerName
	// Key is the current signing key; retired ones come from
	// Config.OldSigningKeys.
	Key        signingkey.Key
	Roomserver *roomserver.Roomserver
	// Stream and Typing receive what remote servers' EDUs change.
	Stream *stream.Stream
	Typing *typing.Tracker
	// Transport carries outbound requests (matrix-federation:// URLs).
	Transport http.RoundTripper
	// Metrics may be nil.
	Metrics *httpapi.Metrics
	Log     logrus.FieldLogger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Presence takes inbound m.presence EDUs; nil ignores them.
	Presence *presence.Presence
	// Keys holds end-to-end encryption keys and device lists (nil: a
	// store of its own).
	Keys *e2ee.Service
}

// Federation is the federation component. Create it with New and serve
// Handler on the federation listener.
type Federation struct {
	db         *storage.DB
	cfg        *config.Config
	serverName spec.ServerName
	key        signingkey.Key
	oldKeys    map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey
	rs         *roomserver.Roomserver
	log        logrus.FieldLogger
	now        func() time.Time

	client  fclient.FederationClient
	keys    *keyDatabase
	keyRing *gomatrixserverlib.KeyRing
	limiter *ratelimit.Limiter // nil: no limit
	deny    []string           // lower-cased globs
	acls    *aclCache
	handler http.Handler

	rooms *roomFed
	txns  *transactions
	e2ee  *e2ee.Service
	// OnInbound is told of every server that sends us a transaction (so
	// the sender can retry what it owes that server at once); may be nil.
	OnInbound func(spec.ServerName)
}

// New builds the federation component.
func New(d Deps) (*Federation, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = logrus.StandardLogger()
	}
	f := &Federation{
		db: d.DB, cfg: d.Config, serverName: d.ServerName, key: d.Key, rs: d.Roomserver,
		log: d.Log, now: d.Now, acls: newACLCache(),
		oldKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	for id, k := range d.Config.OldSigningKeys {
		if gomatrixserverlib.KeyID(id) == d.Key.ID {
			// Rotation writes the config before the new key; in between
			// the current key is listed as old too.
			continue
		}
		pub, err := config.DecodePublicKey(k.Key)
		if err != nil {
			return nil, fmt.Errorf("old_signing_keys.%s: %w", id, err)
		}
		f.oldKeys[gomatrixserverlib.KeyID(id)] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(pub)}, ExpiredTS: spec.Timestamp(k.ExpiredTS),
		}
	}
	for _, p := range d.Config.Federation.DenyServers {
		f.deny = append(f.deny, strings.ToLower(p))
	}
	if d.Config.RateLimits.Enabled {
		r := d.Config.Federation.RateLimit
		f.limiter = ratelimit.New(r.PerSecond, r.Burst, d.Now)
	}

	f.client = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: d.ServerName, KeyID: d.Key.ID, PrivateKey: d.Key.PrivateKey}},
		fclient.WithTransport(d.Transport),
		fclient.WithTimeout(clientTimeout),
		fclient.WithUserAgent("Veche/"+version.Version),
	)
	f.keys = newKeyDatabase(d.DB, f.serverName, f.localKeys, d.Now, d.Log)
	kc := &recordingKeyClient{KeyClient: f.client, f: f}
	fetchers := []gomatrixserverlib.KeyFetcher{&gomatrixserverlib.DirectKeyFetcher{
		Client:            kc,
		IsLocalServerName: func(s spec.ServerName) bool { return s == f.serverName },
		LocalPublicKey:    spec.Base64Bytes(d.Key.Public()),
	}}
	for i, ks := range d.Config.Federation.TrustedKeyServers {
		keys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
		for id, k := range ks.VerifyKeys {
			pub, err := config.DecodePublicKey(k)
			if err != nil {
				return nil, fmt.Errorf("federation.trusted_key_servers[%d].verify_keys.%s: %w", i, id, err)
			}
			keys[gomatrixserverlib.KeyID(id)] = pub
		}
		fetchers = append(fetchers, &gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: spec.ServerName(ks.ServerName), PerspectiveServerKeys: keys, Client: kc,
		})
	}
	f.keyRing = &gomatrixserverlib.KeyRing{KeyDatabase: f.keys, KeyFetchers: fetchers}
	f.rooms = &roomFed{
		serverName: f.serverName, key: d.Key, rs: d.Roomserver, client: f.client, keys: f.keyRing,
		log: d.Log, now: d.Now,
	}
	f.txns = &transactions{rf: f.rooms, db: d.DB, typing: d.Typing, stream: d.Stream, acl: f.checkACL}
	f.txns.presence = d.Presence
	f.useKeys(d)

	rt := httpapi.NewRouter()
	f.registerRoutes(rt)
	f.handler = httpapi.Wrap(withLibraryLogger(rt), httpapi.Options{
		Log: d.Log.WithField("component", "federation-http"), Metrics: d.Metrics,
		MaxBodyBytes: d.Config.Federation.MaxRequestBytes, Component: "federation",
	})
	return f, nil
}

// Handler serves /_matrix/federation/* and /_matrix/key/*; every other
// path answers 404 M_UNRECOGNIZED.
func (f *Federation) Handler() http.Handler { return f.handler }

// ServerName is this server's name.
func (f *Federation) ServerName() spec.ServerName { return f.serverName }

// KeyRing checks signatures of other servers (and of this one) on requests
// and events; keys are cached in the database.
func (f *Federation) KeyRing() *gomatrixserverlib.KeyRing { return f.keyRing }

// Client is the process's federation client: requests it makes are signed
// with this server's key and travel through the configured transport.
func (f *Federation) Client() fclient.FederationClient { return f.client }

// Denied reports whether federation.deny_servers refuses a server, in
// either direction. Patterns are matched case-insensitively against the
// name with and without its port.
func (f *Federation) Denied(server spec.ServerName) bool {
	name := strings.ToLower(string(server))
	host := name
	if h, _, ok := spec.ParseAndValidateServerName(spec.ServerName(name)); ok {
		host = h
	}
	for _, p := range f.deny {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
		if ok, _ := path.Match(p, host); ok {
			return true
		}
	}
	return false
}

// localKeys are this server's keys as key lookups see them: the current
// key, valid as far ahead as anyone asks, and the retired ones.
func (f *Federation) localKeys() map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{
		f.key.ID: {
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(f.key.Public())},
			ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
			ValidUntilTS: spec.AsTimestamp(f.now().Add(365 * 24 * time.Hour)),
		},
	}
	for id, k := range f.oldKeys {
		out[id] = gomatrixserverlib.PublicKeyLookupResult{VerifyKey: k.VerifyKey, ExpiredTS: k.ExpiredTS, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid}
	}
	return out
}

// sortedServers returns map keys in a stable order (responses and logs).
func sortedServers[V any](m map[spec.ServerName]V) []spec.ServerName {
	out := make([]spec.ServerName, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
