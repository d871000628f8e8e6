package transport

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRefusedReason(t *testing.T) {
	tests := []struct {
		ip   string
		want string // "" for public
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"2606:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of a public address
		{"2002:808:808::1", ""},  // 6to4 of a public address
		{"127.0.0.1", "loopback"},
		{"127.255.0.7", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "this-network"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"::ffff:192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"224.0.0.1", "link-local"},
		{"233.252.0.1", "multicast"},
		{"239.1.2.3", "multicast"},
		{"ff02::1", "link-local"},
		{"ff0e::1", "multicast"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"100.127.255.254", "shared (carrier-grade NAT)"},
		{"255.255.255.255", "reserved"},
		{"240.0.0.1", "reserved"},
		{"192.0.0.8", "IETF protocol assignment"},
		{"192.0.2.1", "documentation"},
		{"198.51.100.1", "documentation"},
		{"203.0.113.1", "documentation"},
		{"2001:db8::1", "documentation"},
		{"198.18.0.1", "benchmarking"},
		{"::127.0.0.1", "IPv4-compatible"},
		{"fec0::1", "site-local"},
		{"100::1", "discard-only"},
		{"64:ff9b::a00:1", "private"},      // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", "loopback"},    // NAT64 of 127.0.0.1
		{"2002:c0a8:101::1", "private"},    // 6to4 of 192.168.1.1
		{"2002:a9fe:a9fe::", "link-local"}, // 6to4 of 169.254.169.254
		{"64:ff9b:1::1", "local-use NAT64"},
	}
	for _, tc := range tests {
		if got := refusedReason(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("refusedReason(%s) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct {
		addr, wantErr string
	}{
		{"8.8.8.8:8448", ""},
		{"[2606:4700::1111]:443", ""},
		{"10.0.0.1:8448", "10.0.0.1 is a private address"},
		{"[::ffff:127.0.0.1]:8448", "127.0.0.1 is a loopback address"},
		{"nonsense", "cannot parse"},
	} {
		err := checkAddress(tc.addr)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("checkAddress(%s) = %v", tc.addr, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrRefusedAddress) || !strings.Contains(err.Error(), tc.wantErr) ||
			!strings.Contains(err.Error(), "allow_private_networks") && tc.wantErr != "cannot parse" {
			t.Errorf("checkAddress(%s) = %v, want refusal containing %q", tc.addr, err, tc.wantErr)
		}
	}
}
