// Package transport carries outbound federation requests: it resolves a
// server name to the address that serves its federation API (the spec's
// discovery order, or federation.hosts), connects with the right TLS
// server name, and refuses private addresses unless allowed (SSRF).
//
// It is the http.RoundTripper given to gomatrixserverlib's fclient, whose
// requests use URLs of the form matrix-federation://<server name>/path.
package transport

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configure a Transport.
type Options struct {
	// Hosts maps server names to host:port, bypassing discovery.
	Hosts map[string]string
	// InsecureSkipVerify accepts any certificate.
	InsecureSkipVerify bool
	// AllowPrivateNetworks permits loopback/private/link-local targets.
	AllowPrivateNetworks bool
	Log                  logrus.FieldLogger
	// Now is the clock for cache expiry; nil means time.Now.
	Now func() time.Time
}

// Transport is an http.RoundTripper for matrix-federation:// URLs.
type Transport struct {
	opts Options

	mu    sync.Mutex
	conns map[string]*http.Transport // by TLS server name
}

// New returns a Transport. Close it to drop idle connections.
func New(opts Options) *Transport {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	return &Transport{opts: opts, conns: map[string]*http.Transport{}}
}

// Destination is where one server name's federation API is served.
type Destination struct {
	// Addr is the host:port to dial.
	Addr string
	// Host is the Host header to send.
	Host string
	// TLSServerName is the SNI and certificate name.
	TLSServerName string
}

// Resolve finds where serverName's federation API is served.
// (Minimal placeholder: federation.hosts, else name:8448.)
func (t *Transport) Resolve(serverName string) (Destination, error) {
	if addr, ok := t.opts.Hosts[serverName]; ok {
		host, _, _ := net.SplitHostPort(serverName)
		if host == "" {
			host = serverName
		}
		return Destination{Addr: addr, Host: serverName, TLSServerName: host}, nil
	}
	if _, _, err := net.SplitHostPort(serverName); err == nil {
		host, _, _ := net.SplitHostPort(serverName)
		return Destination{Addr: serverName, Host: serverName, TLSServerName: host}, nil
	}
	return Destination{Addr: net.JoinHostPort(serverName, "8448"), Host: serverName, TLSServerName: serverName}, nil
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix-federation" && req.URL.Scheme != "matrix" {
		return nil, fmt.Errorf("transport: unsupported scheme %q", req.URL.Scheme)
	}
	dest, err := t.Resolve(req.URL.Host)
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = "https"
	out.URL.Host = dest.Addr
	out.Host = dest.Host
	return t.transportFor(dest.TLSServerName).RoundTrip(out)
}

func (t *Transport) transportFor(tlsName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr := t.conns[tlsName]; tr != nil {
		return tr
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{ServerName: tlsName, InsecureSkipVerify: t.opts.InsecureSkipVerify},
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	t.conns[tlsName] = tr
	return tr
}

// Close drops idle connections.
func (t *Transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.conns {
		tr.CloseIdleConnections()
	}
}
