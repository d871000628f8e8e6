package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	wellKnownTimeout      = 5 * time.Second
	wellKnownMaxBytes     = 50 << 10
	wellKnownMaxRedirects = 5

	// A good answer lives as its cache headers say, else the spec's
	// recommended 24h, at most its recommended 48h. The floor keeps a
	// "no-cache" server from being asked before every request.
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMinTTL     = 5 * time.Minute
	wellKnownMaxTTL     = 48 * time.Hour

	// Failures are cached for 10 minutes, doubling with each consecutive
	// failure up to the spec's "up to an hour": a server that fixes its
	// well-known is picked up soon, a missing one is not asked often.
	wellKnownFailTTL    = 10 * time.Minute
	wellKnownMaxFailTTL = time.Hour

	// A transient failure (network error, 5xx) does not drop a delegation
	// that was good until recently: it is kept, retried every
	// wellKnownStaleRetry, for up to wellKnownStaleFor past its expiry.
	// Otherwise one outage of the well-known host would send traffic to
	// the wrong place for the whole failure back-off.
	wellKnownStaleRetry = 2 * time.Minute
	wellKnownStaleFor   = time.Hour
)

type wellKnownEntry struct {
	delegated  string    // m.server; "" when there is none
	expires    time.Time // when to fetch again
	staleUntil time.Time // how long delegated survives transient failures
	failures   int       // consecutive failed fetches, for back-off
}

type wellKnownResult struct {
	delegated string
	ttl       time.Duration
	transient bool
	err       error
}

// lookupWellKnown returns host's delegated server name, or "" when it has
// no usable /.well-known/matrix/server.
func (t *Transport) lookupWellKnown(ctx context.Context, host string) (string, error) {
	host = strings.ToLower(host)
	if e := t.cachedWellKnown(host); e != nil {
		return e.delegated, nil
	}
	// One fetch per host at a time, detached from the caller's context so
	// that one canceled request neither fails the others nor gets its
	// cancellation cached as the host's failure.
	ch := t.flights.DoChan(host, func() (any, error) {
		if e := t.cachedWellKnown(host); e != nil { // refreshed meanwhile
			return e.delegated, nil
		}
		return t.refreshWellKnown(context.WithoutCancel(ctx), host), nil
	})
	select {
	case r := <-ch:
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (t *Transport) cachedWellKnown(host string) *wellKnownEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.wkCache[host]; e != nil && t.opts.Now().Before(e.expires) {
		return e
	}
	return nil
}

// refreshWellKnown fetches host's well-known and caches the outcome.
func (t *Transport) refreshWellKnown(ctx context.Context, host string) string {
	res := t.fetchWellKnown(ctx, host)
	now := t.opts.Now()
	log := t.opts.Log.WithField("host", host)
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.wkCache[host]
	var e wellKnownEntry
	switch {
	case res.err == nil:
		ttl := min(max(res.ttl, wellKnownMinTTL), wellKnownMaxTTL)
		e = wellKnownEntry{delegated: res.delegated, expires: now.Add(ttl), staleUntil: now.Add(ttl + wellKnownStaleFor)}
		log.WithFields(logrus.Fields{"m.server": res.delegated, "ttl": ttl}).Debug("Federation: well-known delegation")
	case res.transient && prev != nil && prev.delegated != "" && now.Before(prev.staleUntil):
		log.WithError(res.err).Warn("Federation: well-known fetch failed; keeping the previous delegation for now")
		e = *prev
		e.expires = now.Add(wellKnownStaleRetry)
	default:
		e.failures = 1
		if prev != nil && prev.delegated == "" {
			e.failures = min(prev.failures+1, 8) // 8 doublings pass the cap
		}
		e.expires = now.Add(min(wellKnownFailTTL<<(e.failures-1), wellKnownMaxFailTTL))
		log.WithError(res.err).Debug("Federation: no usable well-known")
	}
	t.wkCache[host] = &e
	t.sweepLocked(now)
	return e.delegated
}

// fetchWellKnown GETs https://host/.well-known/matrix/server.
func (t *Transport) fetchWellKnown(ctx context.Context, host string) wellKnownResult {
	authority := host
	if t.wellKnownPort != "" {
		authority = net.JoinHostPort(host, t.wellKnownPort)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+authority+"/.well-known/matrix/server", nil)
	if err != nil {
		return wellKnownResult{err: err}
	}
	resp, err := t.wellKnown.Do(req)
	if err != nil {
		return wellKnownResult{err: err, transient: true}
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return wellKnownResult{
			err:       fmt.Errorf("well-known: status %d", resp.StatusCode),
			transient: resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests,
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil {
		return wellKnownResult{err: err, transient: true}
	}
	if len(body) > wellKnownMaxBytes {
		return wellKnownResult{err: fmt.Errorf("well-known: larger than %d bytes", wellKnownMaxBytes)}
	}
	// The spec says to parse the body as JSON whatever its Content-Type.
	var doc struct {
		Server string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return wellKnownResult{err: fmt.Errorf("well-known: %w", err)}
	}
	if _, _, err := splitServerName(doc.Server); err != nil {
		return wellKnownResult{err: fmt.Errorf("well-known: m.server: %w", err)}
	}
	return wellKnownResult{delegated: doc.Server, ttl: cacheTTL(resp.Header, t.opts.Now())}
}

// checkWellKnownRedirect follows a few HTTPS redirects and stops loops.
// Where a redirect points is checked by the dialer like any address.
func checkWellKnownRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > wellKnownMaxRedirects {
		return fmt.Errorf("more than %d redirects", wellKnownMaxRedirects)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to non-HTTPS %s", req.URL.Redacted())
	}
	for _, v := range via {
		if v.URL.String() == req.URL.String() {
			return fmt.Errorf("redirect loop at %s", req.URL.Redacted())
		}
	}
	return nil
}

// cacheTTL is how long a response may be cached according to its
// Cache-Control or Expires header (RFC 9111), or the default without
// either. The caller clamps it.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	maxAge, noStore := -1, false
	for _, d := range strings.Split(strings.Join(h.Values("Cache-Control"), ","), ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		switch {
		case d == "no-store", d == "no-cache":
			noStore = true
		case strings.HasPrefix(d, "max-age="):
			if n, err := strconv.Atoi(strings.Trim(d[len("max-age="):], `"`)); err == nil && n >= 0 {
				maxAge = n
			}
		}
	}
	switch {
	case noStore:
		return 0
	case maxAge >= 0:
		return time.Duration(min(maxAge, 1<<30)) * time.Second // no overflow
	}
	if exp := h.Get("Expires"); exp != "" {
		expires, err := http.ParseTime(exp)
		if err != nil {
			return 0 // an invalid Expires means already expired
		}
		if date, err := http.ParseTime(h.Get("Date")); err == nil {
			return expires.Sub(date)
		}
		return expires.Sub(now)
	}
	return wellKnownDefaultTTL
}
