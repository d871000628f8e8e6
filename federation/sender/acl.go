package sender

import (
	"encoding/json"
	"net"
	"path"
	"strings"
)

// serverACL is a room's m.room.server_acl content (spec: Client-Server
// API, "Server Access Control Lists (ACLs) for rooms"). Receivers enforce
// it on what denied servers send; the sender applies it too so that a
// denied server is not sent the room's events either.
type serverACL struct {
	allow, deny     []string
	allowIPLiterals bool
}

// parseACL reads the content leniently: values of the wrong type count as
// missing, as the spec's defaults say (allow_ip_literals true, lists
// empty).
func parseACL(content json.RawMessage) *serverACL {
	var raw struct {
		Allow           []json.RawMessage `json:"allow"`
		Deny            []json.RawMessage `json:"deny"`
		AllowIPLiterals json.RawMessage   `json:"allow_ip_literals"`
	}
	_ = json.Unmarshal(content, &raw)
	acl := &serverACL{allowIPLiterals: string(raw.AllowIPLiterals) != "false"}
	strs := func(in []json.RawMessage) []string {
		var out []string
		for _, r := range in {
			var s string
			if json.Unmarshal(r, &s) == nil {
				out = append(out, strings.ToLower(s))
			}
		}
		return out
	}
	acl.allow, acl.deny = strs(raw.Allow), strs(raw.Deny)
	return acl
}

// allows applies the spec's order: IP literals, then deny, then allow,
// else deny; always on the server name without its port.
func (a *serverACL) allows(server string) bool {
	host := strings.ToLower(hostOf(server))
	if !a.allowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, p := range a.deny {
		if globMatch(p, host) {
			return false
		}
	}
	for _, p := range a.allow {
		if globMatch(p, host) {
			return true
		}
	}
	return false
}

// hostOf strips the port from a server name.
func hostOf(server string) string {
	if strings.HasPrefix(server, "[") {
		if i := strings.Index(server, "]"); i >= 0 {
			return server[:i+1]
		}
		return server
	}
	if i := strings.LastIndex(server, ":"); i >= 0 {
		return server[:i]
	}
	return server
}

func isIPLiteral(host string) bool {
	return strings.HasPrefix(host, "[") || net.ParseIP(host) != nil
}

// globMatch matches the spec's globs: * is any run of characters, ? is
// one character, everything else is literal.
func globMatch(pattern, s string) bool {
	p, str := []rune(pattern), []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(str) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == str[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// denied tells whether federation.deny_servers names the server, with or
// without its port.
func (s *Sender) denied(server string) bool {
	name := strings.ToLower(server)
	host := hostOf(name)
	for _, p := range s.deny {
		p = strings.ToLower(p)
		if ok, _ := path.Match(p, name); ok {
			return true
		}
		if ok, _ := path.Match(p, host); ok {
			return true
		}
	}
	return false
}
