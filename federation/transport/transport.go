// Package transport carries outbound federation requests: it resolves a
// server name to the address that serves its federation API (the spec's
// discovery order, or federation.hosts), connects with the right TLS
// server name, and refuses private addresses unless allowed (SSRF).
//
// It is the http.RoundTripper given to gomatrixserverlib's fclient, whose
// requests use URLs of the form matrix-federation://<server name>/path
// (fclient itself writes matrix://, which is accepted too).
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"
)

const (
	// connectTimeout bounds one TCP connect; a peer that does not answer
	// within it is probably not going to.
	connectTimeout = 5 * time.Second
	// defaultPort is the federation port when discovery finds none.
	defaultPort = "8448"
)

// Options configure a Transport.
type Options struct {
	// Hosts maps server names to host:port, bypassing discovery. These
	// addresses come from the operator, so they may be private.
	Hosts map[string]string
	// InsecureSkipVerify accepts any certificate.
	InsecureSkipVerify bool
	// AllowPrivateNetworks permits loopback/private/link-local targets.
	AllowPrivateNetworks bool
	Log                  logrus.FieldLogger
	// Now is the clock for cache expiry; nil means time.Now.
	Now func() time.Time
	// Resolver answers SRV and address lookups; nil means
	// net.DefaultResolver.
	Resolver Resolver
	// RootCAs verifies peer certificates; nil means the system pool.
	RootCAs *x509.CertPool
}

// Transport is an http.RoundTripper for matrix-federation:// URLs.
type Transport struct {
	opts     Options
	hosts    map[string]string // Options.Hosts with lower-cased keys
	resolver Resolver

	// wellKnown fetches /.well-known/matrix/server through the guarded
	// dialer; redirects land on the same dialer, so they cannot reach a
	// private address either.
	wellKnown *http.Client
	// wellKnownPort is the port of well-known fetches; "" means 443.
	// Only tests change it, to reach their httptest server.
	wellKnownPort string
	flights       singleflight.Group // one well-known fetch per host at a time

	mu        sync.Mutex
	conns     map[connKey]*http.Transport
	wkCache   map[string]*wellKnownEntry // by hostname
	srvCache  map[string]*srvEntry       // by _service._tcp.hostname
	nextSweep time.Time
}

// connKey picks the http.Transport of a destination. Operator-configured
// destinations get their own, whose dialer lets them reach private
// addresses, so a discovered destination never reuses those connections.
type connKey struct {
	tlsName string
	trusted bool
}

// New returns a Transport. Close it to drop idle connections.
func New(opts Options) *Transport {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	t := &Transport{
		opts:     opts,
		hosts:    map[string]string{},
		resolver: opts.Resolver,
		conns:    map[connKey]*http.Transport{},
		wkCache:  map[string]*wellKnownEntry{},
		srvCache: map[string]*srvEntry{},
	}
	if t.resolver == nil {
		t.resolver = net.DefaultResolver
	}
	// Server names are DNS names, which compare case-insensitively (and
	// viper lower-cases config keys anyway).
	for name, addr := range opts.Hosts {
		t.hosts[strings.ToLower(name)] = addr
	}
	t.wellKnown = &http.Client{
		Transport:     t.newHTTPTransport(nil, !opts.AllowPrivateNetworks),
		CheckRedirect: checkWellKnownRedirect,
		Timeout:       wellKnownTimeout,
	}
	return t
}

// Destination is where one server name's federation API is served.
type Destination struct {
	// Addr is the host:port to dial.
	Addr string
	// Host is the Host header to send.
	Host string
	// TLSServerName is the SNI and certificate name. For an IP address
	// no SNI is sent and the certificate must name the IP.
	TLSServerName string

	// trusted marks a federation.hosts entry: dialed even if private.
	trusted bool
}

// RoundTrip implements http.RoundTripper. It tries the resolved
// candidates in order, moving on only when connecting failed, so a request
// is never sent twice.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix-federation" && req.URL.Scheme != "matrix" {
		closeBody(req)
		return nil, fmt.Errorf("transport: unsupported scheme %q", req.URL.Scheme)
	}
	serverName := req.URL.Host
	dests, err := t.Resolve(req.Context(), serverName)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	var errs []error
	for i, dest := range dests {
		out := req.Clone(req.Context())
		if i > 0 && req.Body != nil && req.Body != http.NoBody {
			// The failed attempt closed the body; only a request that can
			// replay it may move on.
			if req.GetBody == nil {
				break
			}
			if out.Body, err = req.GetBody(); err != nil {
				errs = append(errs, err)
				break
			}
		}
		out.URL.Scheme = "https"
		out.URL.Host = dest.Addr
		out.Host = dest.Host
		resp, err := t.transportFor(dest).RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		if dest.Addr != serverName {
			err = fmt.Errorf("%s: %w", dest.Addr, err)
		}
		errs = append(errs, err)
		var de *dialError
		if !errors.As(err, &de) || req.Context().Err() != nil {
			break
		}
		t.opts.Log.WithFields(logrus.Fields{"server_name": serverName, "addr": dest.Addr}).
			WithError(err).Debug("Federation: cannot connect, trying the next candidate")
	}
	return nil, fmt.Errorf("transport: %s: %w", serverName, errors.Join(errs...))
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func (t *Transport) transportFor(dest Destination) *http.Transport {
	key := connKey{dest.TLSServerName, dest.trusted}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.conns[key]; tr != nil {
		return tr
	}
	tr := t.newHTTPTransport(&tls.Config{ServerName: dest.TLSServerName},
		!dest.trusted && !t.opts.AllowPrivateNetworks)
	t.conns[key] = tr
	return tr
}

// newHTTPTransport returns an http.Transport with keep-alives and HTTP/2,
// no proxy, and the dialer that refuses private addresses when guard is
// set.
func (t *Transport) newHTTPTransport(tlsConf *tls.Config, guard bool) *http.Transport {
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	tlsConf.RootCAs = t.opts.RootCAs
	tlsConf.InsecureSkipVerify = t.opts.InsecureSkipVerify
	return &http.Transport{
		DialContext:         t.dialer(guard),
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
}

// Close drops idle connections.
func (t *Transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.conns {
		tr.CloseIdleConnections()
	}
	t.wellKnown.CloseIdleConnections()
}
