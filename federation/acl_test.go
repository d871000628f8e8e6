package federation

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestServerACL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		allowed []spec.ServerName
		denied  []spec.ServerName
	}{
		{
			name:    "allow all but deny list",
			content: `{"allow": ["*"], "deny": ["evil.com", "*.evil.com"]}`,
			allowed: []spec.ServerName{"good.org", "good.org:8448", "notevil.com", "127.0.0.1", "[::1]:8448"},
			denied:  []spec.ServerName{"evil.com", "evil.com:8448", "evil.com:1234", "sub.evil.com", "a.b.evil.com:9"},
		},
		{
			name:    "globs are case-insensitive",
			content: `{"allow": ["*"], "deny": ["EVIL.com", "B?d.org"]}`,
			allowed: []spec.ServerName{"bd.org", "baad.org"},
			denied:  []spec.ServerName{"evil.COM", "Evil.Com:8448", "bad.org", "BED.ORG"},
		},
		{
			name:    "deny wins over allow",
			content: `{"allow": ["*.example.org"], "deny": ["bad.example.org"]}`,
			allowed: []spec.ServerName{"a.example.org", "a.example.org:443"},
			denied:  []spec.ServerName{"bad.example.org", "example.org", "other.net"},
		},
		{
			name:    "no allow list denies everyone",
			content: `{"deny": []}`,
			denied:  []spec.ServerName{"any.org", "127.0.0.1"},
		},
		{
			name:    "empty content denies everyone",
			content: `{}`,
			denied:  []spec.ServerName{"any.org"},
		},
		{
			name:    "IP literals refused",
			content: `{"allow": ["*"], "allow_ip_literals": false}`,
			allowed: []spec.ServerName{"example.org", "1.2.3.4.example.org"},
			denied:  []spec.ServerName{"1.2.3.4", "1.2.3.4:8448", "[::1]", "[2001:db8::1]:8448"},
		},
		{
			name:    "IP literals allowed explicitly",
			content: `{"allow": ["*"], "allow_ip_literals": true}`,
			allowed: []spec.ServerName{"1.2.3.4", "[::1]:8448"},
		},
		{
			name:    "non-boolean allow_ip_literals means true",
			content: `{"allow": ["*"], "allow_ip_literals": "false"}`,
			allowed: []spec.ServerName{"1.2.3.4"},
		},
		{
			name:    "IP literal matched by glob without port",
			content: `{"allow": ["10.0.0.*", "[::1]"]}`,
			allowed: []spec.ServerName{"10.0.0.7:8448", "[::1]:8448"},
			denied:  []spec.ServerName{"10.0.1.7", "[::2]"},
		},
		{
			name:    "malformed entries are skipped",
			content: `{"allow": [1, null, "ok.org", {"x": 1}], "deny": "evil.com"}`,
			allowed: []spec.ServerName{"ok.org"},
			denied:  []spec.ServerName{"evil.com"},
		},
		{
			name:    "regexp characters are literal",
			content: `{"allow": ["a.b", "(x)+"]}`,
			allowed: []spec.ServerName{"a.b", "(x)+"},
			denied:  []spec.ServerName{"axb", "xx"},
		},
		{
			name:    "not JSON",
			content: `nope`,
			denied:  []spec.ServerName{"example.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			acl := parseACL([]byte(tt.content))
			for _, s := range tt.allowed {
				if !acl.allows(s) {
					t.Errorf("%s denied, want allowed", s)
				}
			}
			for _, s := range tt.denied {
				if acl.allows(s) {
					t.Errorf("%s allowed, want denied", s)
				}
			}
		})
	}
}

func TestDenied(t *testing.T) {
	t.Parallel()
	f := &Federation{deny: []string{"evil.com", "*.bad.org", "port.net:8448"}}
	tests := []struct {
		server spec.ServerName
		want   bool
	}{
		{"evil.com", true},
		{"EVIL.com", true},
		{"evil.com:8448", true},
		{"x.bad.org", true},
		{"x.bad.org:1", true},
		{"bad.org", false},
		{"port.net:8448", true},
		{"port.net:9", false},
		{"good.org", false},
	}
	for _, tt := range tests {
		if got := f.Denied(tt.server); got != tt.want {
			t.Errorf("Denied(%s) = %v, want %v", tt.server, got, tt.want)
		}
	}
}
