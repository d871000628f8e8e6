package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeDNS answers from maps and counts SRV lookups. Names are given
// without the trailing dot.
type fakeDNS struct {
	mu       sync.Mutex
	srv      map[string][]*net.SRV // "_matrix-fed._tcp.example.org"
	srvErr   map[string]error
	ips      map[string][]string
	srvCalls map[string]int
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{srv: map[string][]*net.SRV{}, srvErr: map[string]error{}, ips: map[string][]string{}, srvCalls: map[string]int{}}
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + strings.TrimSuffix(name, ".")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.srvCalls[key]++
	if err := f.srvErr[key]; err != nil {
		return "", nil, err
	}
	records, ok := f.srv[key]
	if !ok {
		return "", nil, notFound(key)
	}
	return key + ".", records, nil
}

func (f *fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ips, ok := f.ips[strings.TrimSuffix(host, ".")]
	if !ok {
		return nil, notFound(host)
	}
	var out []net.IPAddr
	for _, s := range ips {
		out = append(out, net.IPAddr{IP: net.IP(netip.MustParseAddr(s).AsSlice())})
	}
	return out, nil
}

func (f *fakeDNS) setSRV(name string, records ...*net.SRV) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.srv[name] = records
}

func (f *fakeDNS) setIPs(host string, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ips[host] = ips
}

func (f *fakeDNS) calls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.srvCalls[name]
}

// fakeClock is an injected clock that only moves when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testCA issues certificates for test servers.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns a certificate for names; IP literals become IP SANs.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// seen is what the test server reports about a federation request.
type seen struct {
	Host, SNI, Method, Path, Body string
	Proto                         int
}

// fedServer is a TLS server on 127.0.0.1 that serves per-host
// /.well-known/matrix/server handlers (404 for hosts without one) and
// echoes any other request as a seen.
type fedServer struct {
	*httptest.Server
	port string

	mu        sync.Mutex
	wellKnown map[string]http.HandlerFunc // by hostname
	wkHits    map[string]int
}

func newFedServer(t *testing.T, ca *testCA, names ...string) *fedServer {
	t.Helper()
	s := &fedServer{wellKnown: map[string]http.HandlerFunc{}, wkHits: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, names...)}}
	s.EnableHTTP2 = true
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	s.StartTLS()
	t.Cleanup(s.Close)
	_, s.port, _ = net.SplitHostPort(s.Listener.Addr().String())
	return s
}

func (s *fedServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/.well-known/matrix/server" {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		s.mu.Lock()
		s.wkHits[host]++
		h := s.wellKnown[host]
		s.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.NewEncoder(w).Encode(seen{
		Host: r.Host, SNI: r.TLS.ServerName, Method: r.Method, Path: r.URL.RequestURI(), Body: string(body), Proto: r.ProtoMajor,
	})
}

func (s *fedServer) setWellKnown(host string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wellKnown[host] = h
}

func (s *fedServer) hits(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wkHits[host]
}

// respond returns a handler answering with status, body and header
// key/value pairs.
func respond(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func mServer(name string, header ...string) http.HandlerFunc {
	b, _ := json.Marshal(map[string]string{"m.server": name})
	return respond(http.StatusOK, string(b), header...)
}

func testLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if os.Getenv("VECHE_TEST_LOG") != "" {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return l
}

// newTestTransport fills in the test logger, and the well-known port of
// srv so fetches for any host reach it.
func newTestTransport(t *testing.T, opts Options, srv *fedServer) *Transport {
	t.Helper()
	opts.Log = testLogger()
	tr := New(opts)
	if srv != nil {
		tr.wellKnownPort = srv.port
	}
	t.Cleanup(tr.Close)
	return tr
}
