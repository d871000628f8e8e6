package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// Resolver looks up DNS records; *net.Resolver implements it.
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// ErrRefusedAddress is wrapped by the error of a connection refused
// because its address is not a public one (SSRF protection).
var ErrRefusedAddress = errors.New("address refused (SSRF protection)")

// dialError marks a failure to connect: nothing of the request was sent,
// so the next candidate may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialer resolves host names through t.resolver and connects to each
// address in turn. With guard set, every address is checked just before
// connect() on the socket's own address, so neither a DNS answer that
// changes between checks (rebinding) nor a redirect reaches a private
// address.
func (t *Transport) dialer(guard bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: connectTimeout}
	if guard {
		d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			return checkAddress(address)
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &dialError{err}
		}
		targets := []string{addr}
		if _, err := netip.ParseAddr(host); err != nil {
			ips, err := t.resolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, &dialError{err}
			}
			targets = targets[:0]
			for _, ip := range ips {
				targets = append(targets, net.JoinHostPort(ip.String(), port))
			}
		}
		if len(targets) == 0 {
			return nil, &dialError{fmt.Errorf("no addresses for %s", host)}
		}
		var errs []error
		for _, a := range targets {
			conn, err := d.DialContext(ctx, network, a)
			if err == nil {
				return conn, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, &dialError{errors.Join(errs...)}
	}
}

// checkAddress refuses an ip:port that is not a public unicast address.
func checkAddress(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrRefusedAddress, address)
	}
	if why := refusedReason(ap.Addr()); why != "" {
		return fmt.Errorf("%w: %s is a %s address; set federation.allow_private_networks to allow it",
			ErrRefusedAddress, ap.Addr(), why)
	}
	return nil
}

// reservedRanges are the special-purpose ranges (RFC 6890 and successors)
// that netip's predicates do not already cover.
var reservedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // includes broadcast
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// refusedReason says what kind of non-public address ip is, or "" for a
// public one.
func refusedReason(ip netip.Addr) string {
	// IPv4-mapped forms (::ffff:10.0.0.1) reach the IPv4 address; a zone
	// would make Prefix.Contains fail.
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, r := range reservedRanges {
		if r.prefix.Contains(ip) {
			return r.what
		}
	}
	// NAT64 and 6to4 addresses carry an IPv4 address that the gateway
	// will connect to.
	b := ip.As16()
	var v4 [4]byte
	switch {
	case nat64.Contains(ip):
		copy(v4[:], b[12:16])
	case sixToFour.Contains(ip):
		copy(v4[:], b[2:6])
	default:
		return ""
	}
	return refusedReason(netip.AddrFrom4(v4))
}
