// Package clientapi serves the Matrix Client-Server API (/_matrix/client)
// and the Synapse-compatible admin registration endpoint. Handlers are
// grouped by spec module, one file each; routes.go is the map.
package clientapi

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/config"
	"github.com/veche/veche/e2ee"
	"github.com/veche/veche/internal/clientevent"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/ratelimit"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

// Deps are what the client API needs.
type Deps struct {
	Config     *config.Config
	Accounts   *accounts.Service
	DB         *storage.DB
	Roomserver *roomserver.Roomserver
	Stream     *stream.Stream
	Typing     *typing.Tracker
	// Federation reaches other servers; nil when federation is off.
	Federation Federation
	Log        logrus.FieldLogger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// EDUs queues EDUs for other servers; nil when federation is off.
	EDUs EDUQueue

	// Presence tracks presence; nil answers every user offline.
	Presence *presence.Presence
	// Keys holds end-to-end encryption keys.
	Keys *e2ee.Service
}

// API is the client API. Create it with New and mount it with Register.
type API struct {
	cfg      *config.Config
	accounts *accounts.Service
	db       *storage.DB
	rs       *roomserver.Roomserver
	stream   *stream.Stream
	typing   *typing.Tracker
	fed      Federation
	edus     EDUQueue
	presence *presence.Presence
	keys     *e2ee.Service
	format   *clientevent.Formatter
	log      logrus.FieldLogger
	now      func() time.Time

	uia         *uiaSessions
	hierarchies *hierarchySessions
	nonces      *nonceStore
	limits      limiters
	baseURL     string
}

type limiters struct {
	login, loginFailures, register, usernameCheck *ratelimit.Limiter
}

// New builds the client API.
func New(d Deps) *API {
	if d.Now == nil {
		d.Now = time.Now
	}
	a := &API{
		cfg: d.Config, accounts: d.Accounts, db: d.DB, rs: d.Roomserver, stream: d.Stream, typing: d.Typing, fed: d.Federation, edus: d.EDUs, log: d.Log, now: d.Now,
		keys:   d.Keys,
		format: &clientevent.Formatter{RS: d.Roomserver, DB: d.DB, Now: d.Now},
		uia:    newUIASessions(d.Now), hierarchies: newHierarchySessions(d.Now), nonces: newNonceStore(d.Now), baseURL: d.Config.BaseURL(),
	}
	a.presence = d.Presence
	if rl := d.Config.RateLimits; rl.Enabled {
		mk := func(r config.Rate) *ratelimit.Limiter { return ratelimit.New(r.PerSecond, r.Burst, d.Now) }
		a.limits = limiters{
			login: mk(rl.Login), loginFailures: mk(rl.LoginFailures),
			register: mk(rl.Register), usernameCheck: mk(rl.UsernameCheck),
		}
	}
	return a
}

// access says who may call an endpoint.
type access int

const (
	// public endpoints need no access token (one sent along is ignored).
	public access = iota
	// user endpoints need the access token of a full (non-guest) account.
	user
	// guestOK endpoints need an access token, of a guest or a full account.
	guestOK
)

// handle registers h for method and path under every client API version
// prefix that serves it (v3 and the legacy r0).
func (a *API) handle(rt *httpapi.Router, method, path string, acc access, h httpapi.Handler) {
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		rt.Handle(method+" "+prefix+path, a.wrap(acc, h))
	}
}

// handleAt registers h at one exact path.
func (a *API) handleAt(rt *httpapi.Router, method, fullPath string, acc access, h httpapi.Handler) {
	rt.Handle(method+" "+fullPath, a.wrap(acc, h))
}

// requester returns the authenticated caller of a user or guestOK endpoint.
func requester(r *http.Request) *accounts.Requester { return accounts.RequesterFrom(r.Context()) }

// Authed wraps a handler of another component in the client API's token
// check: guests are let in when guestOK is set.
func (a *API) Authed(allowGuests bool, h httpapi.Handler) http.Handler {
	if allowGuests {
		return a.wrap(guestOK, h)
	}
	return a.wrap(user, h)
}

// wrap authenticates the request as acc demands before calling h.
func (a *API) wrap(acc access, h httpapi.Handler) http.Handler {
	return httpapi.Serve(func(r *http.Request) (any, error) {
		if acc == public {
			return h(r)
		}
		token, err := accessToken(r)
		if err != nil {
			return nil, err
		}
		req, err := a.accounts.Authenticate(r.Context(), token, a.clientIP(r), r.UserAgent())
		if err != nil {
			return nil, err
		}
		if req.IsGuest && acc != guestOK {
			return nil, mxerr.GuestAccessForbidden("Guest access is not allowed for this endpoint")
		}
		info := httpapi.Info(r.Context())
		info.UserID = req.UserID.String()
		info.Log = info.Log.WithField("user_id", info.UserID).WithField("device_id", req.DeviceID)
		return h(r.WithContext(accounts.WithRequester(r.Context(), req)))
	})
}

// accessToken takes the token from the Authorization header or, as older
// clients still send it, the access_token query parameter.
func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return "", mxerr.MissingToken("Invalid Authorization header: expected 'Bearer <token>'")
		}
		return strings.TrimSpace(token), nil
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, nil
	}
	return "", mxerr.MissingToken("Missing access token")
}

// clientIP is the caller's address, taken from X-Forwarded-For only when
// the operator said a proxy sets it.
func (a *API) clientIP(r *http.Request) string {
	if a.cfg.Listen.TrustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limit takes a token from l for key or answers M_LIMIT_EXCEEDED.
func limit(l *ratelimit.Limiter, key string) error {
	if ok, wait := l.Allow(key); !ok {
		return mxerr.LimitExceeded(wait)
	}
	return nil
}
