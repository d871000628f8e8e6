package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"regexp"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
)

// errACLDenied is the spec's answer to a server a room's ACL denies.
var errACLDenied = mxerr.Forbidden("Server is banned from this room by its server ACL")

// checkACL enforces a room's m.room.server_acl (spec: Server Access
// Control Lists) on origin: nil when it may take part, M_FORBIDDEN when
// the ACL denies it. A room this server does not know has no ACL here;
// the caller decides what an unknown room means.
func (f *Federation) checkACL(ctx context.Context, roomID string, origin spec.ServerName) error {
	room, err := f.rs.Room(ctx, roomID)
	if errors.Is(err, mxerr.NotFound("")) {
		return nil
	}
	if err != nil {
		return err
	}
	ev, err := f.rs.StateEvent(ctx, room, "m.room.server_acl", "")
	if err != nil || ev == nil {
		return err
	}
	acl := f.acls.get(ev.EventID(), ev.Content())
	if !acl.allows(origin) {
		return errACLDenied
	}
	return nil
}

// serverACL is a parsed m.room.server_acl content.
type serverACL struct {
	allowIPLiterals bool
	allow, deny     []*regexp.Regexp
}

// parseACL reads ACL content leniently, as the spec asks: a missing or
// non-boolean allow_ip_literals means true, missing or malformed lists are
// empty, and entries that are not strings are skipped.
func parseACL(content []byte) *serverACL {
	var c struct {
		AllowIPLiterals json.RawMessage `json:"allow_ip_literals"`
		Allow           json.RawMessage `json:"allow"`
		Deny            json.RawMessage `json:"deny"`
	}
	_ = json.Unmarshal(content, &c)
	acl := &serverACL{allowIPLiterals: string(c.AllowIPLiterals) != "false"}
	acl.allow = globList(c.Allow)
	acl.deny = globList(c.Deny)
	return acl
}

func globList(raw json.RawMessage) []*regexp.Regexp {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []*regexp.Regexp
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) != nil {
			continue
		}
		out = append(out, globRegexp(s))
	}
	return out
}

// globRegexp compiles a case-insensitive glob (spec appendix: '*' any run,
// '?' one character).
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?is)\A`)
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

// allows applies the spec's order: IP literals, then deny, then allow,
// else deny. The port never counts.
func (a *serverACL) allows(server spec.ServerName) bool {
	host := hostWithoutPort(string(server))
	if !a.allowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, re := range a.deny {
		if re.MatchString(host) {
			return false
		}
	}
	for _, re := range a.allow {
		if re.MatchString(host) {
			return true
		}
	}
	return false
}

// hostWithoutPort strips a port, keeping an IPv6 literal's brackets.
func hostWithoutPort(name string) string {
	if strings.HasPrefix(name, "[") {
		if i := strings.Index(name, "]"); i >= 0 {
			return name[:i+1]
		}
		return name
	}
	host, _, _ := strings.Cut(name, ":")
	return host
}

func isIPLiteral(host string) bool {
	return net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")) != nil
}

// aclCacheSize bounds the parsed ACLs kept; /send checks every PDU.
const aclCacheSize = 1024

// aclCache keeps parsed ACLs by event ID and content: a redacted ACL event
// keeps its ID but loses its lists.
type aclCache struct {
	mu sync.Mutex
	m  map[string]*serverACL
}

func newACLCache() *aclCache { return &aclCache{m: map[string]*serverACL{}} }

func (c *aclCache) get(eventID string, content []byte) *serverACL {
	key := eventID + "\x00" + string(content)
	c.mu.Lock()
	defer c.mu.Unlock()
	if acl, ok := c.m[key]; ok {
		return acl
	}
	if len(c.m) >= aclCacheSize {
		clear(c.m)
	}
	acl := parseACL(content)
	c.m[key] = acl
	return acl
}
