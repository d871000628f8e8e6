package transport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// srvTTL is how long SRV answers (found or not) are kept: Go's resolver
// does not expose record TTLs.
const srvTTL = time.Hour

type srvEntry struct {
	records []*net.SRV
	expires time.Time
}

// Resolve finds where serverName's federation API is served, following
// the spec's "Resolving server names": federation.hosts first, then an IP
// literal, an explicit port, /.well-known/matrix/server, SRV records and
// finally port 8448. The candidates are to be tried in order.
func (t *Transport) Resolve(ctx context.Context, serverName string) ([]Destination, error) {
	host, port, err := splitServerName(serverName)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if addr, ok := t.hosts[strings.ToLower(serverName)]; ok {
		return []Destination{{Addr: addr, Host: serverName, TLSServerName: host, trusted: true}}, nil
	}
	if isIP(host) || port != "" {
		return []Destination{{Addr: net.JoinHostPort(host, cmp.Or(port, defaultPort)), Host: serverName, TLSServerName: host}}, nil
	}
	delegated, err := t.lookupWellKnown(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("transport: %s: %w", serverName, err)
	}
	if delegated == "" {
		// Steps 4-6: SRV for the name itself, whose certificate the
		// target must present.
		return t.resolveHostname(ctx, host)
	}
	dhost, dport, err := splitServerName(delegated)
	if err != nil { // validated when fetched
		return nil, fmt.Errorf("transport: %s: %w", serverName, err)
	}
	if isIP(dhost) || dport != "" {
		return []Destination{{Addr: net.JoinHostPort(dhost, cmp.Or(dport, defaultPort)), Host: delegated, TLSServerName: dhost}}, nil
	}
	return t.resolveHostname(ctx, dhost)
}

// resolveHostname looks up _matrix-fed._tcp.<host>, then the deprecated
// _matrix._tcp.<host>, else falls back to host:8448. The Host header and
// certificate name are host in every case (SRV answers are not signed, so
// only host's certificate proves the target may serve it).
func (t *Transport) resolveHostname(ctx context.Context, host string) ([]Destination, error) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		records, err := t.lookupSRV(ctx, service, host)
		if err != nil {
			return nil, fmt.Errorf("transport: SRV lookup for %s: %w", host, err)
		}
		if len(records) == 0 {
			continue
		}
		dests := make([]Destination, 0, len(records))
		for _, r := range orderSRV(records) {
			target := strings.TrimSuffix(r.Target, ".")
			dests = append(dests, Destination{
				Addr: net.JoinHostPort(target, strconv.Itoa(int(r.Port))), Host: host, TLSServerName: host,
			})
		}
		return dests, nil
	}
	return []Destination{{Addr: net.JoinHostPort(host, defaultPort), Host: host, TLSServerName: host}}, nil
}

// lookupSRV returns the usable records of _service._tcp.host, cached. A
// name without records is an empty answer; other DNS failures fall back to
// an expired answer if there is one, else they are errors.
func (t *Transport) lookupSRV(ctx context.Context, service, host string) ([]*net.SRV, error) {
	key := "_" + service + "._tcp." + strings.ToLower(host)
	now := t.opts.Now()
	t.mu.Lock()
	cached := t.srvCache[key]
	t.mu.Unlock()
	if cached != nil && now.Before(cached.expires) {
		return cached.records, nil
	}
	_, records, err := t.resolver.LookupSRV(ctx, service, "tcp", host)
	var dnsErr *net.DNSError
	switch {
	case err == nil, len(records) > 0:
		// Go returns the valid records alongside an error for bad ones.
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		records = nil
	case cached != nil && ctx.Err() == nil:
		t.opts.Log.WithField("srv", key).WithError(err).Warn("Federation: SRV lookup failed, using the expired answer")
		return cached.records, nil
	default:
		return nil, err
	}
	// A target of "." means the service is decidedly not available there
	// (RFC 2782).
	records = slices.DeleteFunc(slices.Clone(records), func(r *net.SRV) bool { return r.Target == "." || r.Target == "" })
	t.mu.Lock()
	t.srvCache[key] = &srvEntry{records: records, expires: now.Add(srvTTL)}
	t.sweepLocked(now)
	t.mu.Unlock()
	return records, nil
}

// orderSRV sorts records by priority and, within one priority, shuffles
// them weighted by weight (RFC 2782), so load spreads as the owner asked.
func orderSRV(records []*net.SRV) []*net.SRV {
	out := slices.Clone(records)
	slices.SortStableFunc(out, func(a, b *net.SRV) int { return cmp.Compare(a.Priority, b.Priority) })
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && out[j].Priority == out[i].Priority {
			j++
		}
		shuffleByWeight(out[i:j])
		i = j
	}
	return out
}

// shuffleByWeight picks each next record with probability proportional to
// its weight; zero-weight records come last.
func shuffleByWeight(records []*net.SRV) {
	sum := 0
	for _, r := range records {
		sum += int(r.Weight)
	}
	for sum > 0 && len(records) > 1 {
		n, s := rand.IntN(sum), 0
		for i, r := range records {
			s += int(r.Weight)
			if s > n {
				records[0], records[i] = records[i], records[0]
				break
			}
		}
		sum -= int(records[0].Weight)
		records = records[1:]
	}
}

// sweepLocked drops cache entries long past use, at most hourly, so names
// seen once do not stay forever. Well-known entries are kept a while past
// expiry: they carry the failure count for back-off and the last good
// delegation.
func (t *Transport) sweepLocked(now time.Time) {
	if now.Before(t.nextSweep) {
		return
	}
	t.nextSweep = now.Add(time.Hour)
	for k, e := range t.srvCache {
		if now.After(e.expires.Add(srvTTL)) {
			delete(t.srvCache, k)
		}
	}
	for k, e := range t.wkCache {
		if now.After(e.expires.Add(wellKnownMaxFailTTL)) && now.After(e.staleUntil) {
			delete(t.wkCache, k)
		}
	}
}

// splitServerName checks a server name against the grammar and splits it
// into host (IPv6 without brackets) and port ("" when absent).
func splitServerName(name string) (host, port string, err error) {
	h, p, ok := spec.ParseAndValidateServerName(spec.ServerName(name))
	if !ok || p == 0 {
		return "", "", fmt.Errorf("invalid server name %q", name)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if p > 0 {
		port = strconv.Itoa(p)
	}
	return host, port, nil
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
