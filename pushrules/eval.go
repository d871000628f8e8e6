package pushrules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Event is an event prepared for evaluation. Parse it once with NewEvent
// and evaluate it for every user it may notify.
type Event struct {
	root   map[string]any
	sender string
	roomID string
}

// NewEvent parses an event's JSON (client or federation format: what
// matters is type, content, sender, room_id and state_key).
func NewEvent(raw []byte) (*Event, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	// Numbers stay json.Number so that event_property_is compares
	// integers exactly instead of as float64.
	d.UseNumber()
	var root map[string]any
	if err := d.Decode(&root); err != nil {
		return nil, err
	}
	ev := &Event{root: root}
	ev.sender, _ = root["sender"].(string)
	ev.roomID, _ = root["room_id"].(string)
	return ev, nil
}

// lookup resolves a dot-separated property path (appendix "Dot-separated
// property paths").
func (e *Event) lookup(path string) (any, bool) {
	return e.lookupParts(splitPath(path))
}

func (e *Event) lookupParts(parts []string) (any, bool) {
	var cur any = e.root
	for _, name := range parts {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[name]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// lookupKey resolves a condition's key, split once when the condition was
// built: evaluation runs for every event and user.
func (e *Event) lookupKey(c *Condition) (any, bool) {
	if c.path == nil {
		return e.lookup(c.Key)
	}
	return e.lookupParts(c.path)
}

// splitPath splits a path at its unescaped dots. `\.` is a literal dot and
// `\\` a literal backslash; any other backslash is itself (spec: other
// escape sequences are left as they are).
func splitPath(path string) []string {
	if !strings.Contains(path, `\`) {
		return strings.Split(path, ".")
	}
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\' && i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\'):
			cur.WriteByte(path[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// EvalContext is what evaluation needs to know besides the event and the
// rules: who is being notified, and about the room.
type EvalContext struct {
	// UserID is the user whose rules these are.
	UserID string
	// DisplayName is the user's display name in the room, for the
	// (deprecated) contains_display_name condition; empty never matches.
	DisplayName string
	// MemberCount is the number of joined members of the room.
	MemberCount int
	// SenderNotificationPermission reports whether the event's sender has
	// the power level the room's power levels require for the
	// notification key (content.notifications.<key>, "room" defaulting to
	// 50). Nil means no permission.
	SenderNotificationPermission func(key string) bool
}

// Match returns the first enabled rule that matches the event, in the
// spec's order (override, content, room, sender, underride), or nil.
func Match(rules Ruleset, ev *Event, ctx EvalContext) *Rule {
	for _, k := range Kinds {
		list := *rules.Global.Of(k)
		for i := range list {
			r := &list[i]
			if r.Enabled && ruleMatches(k, r, ev, ctx) {
				return r
			}
		}
	}
	return nil
}

// Evaluate decides how an event notifies the user: whether it counts as a
// notification, whether it is highlighted, and the sound tweak ("" for
// none). highlight is only ever true for a notifying event: unread counts
// count highlights among notifications. The user's own events never
// notify them (spec: homeservers MUST NOT notify for events the user sent).
func Evaluate(rules Ruleset, ev *Event, ctx EvalContext) (notify, highlight bool, sound string) {
	if ev.sender == ctx.UserID && ctx.UserID != "" {
		return false, false, ""
	}
	r := Match(rules, ev, ctx)
	if r == nil {
		return false, false, ""
	}
	for _, a := range r.Actions {
		if a.IsNotify() {
			notify = true
			continue
		}
		name, value, ok := a.Tweak()
		if !ok {
			continue
		}
		switch name {
		case "highlight":
			// No value (or null) means true (spec, "highlight" tweak).
			var b bool
			highlight = len(value) == 0 || string(value) == "null" || json.Unmarshal(value, &b) == nil && b
		case "sound":
			var s string
			if json.Unmarshal(value, &s) == nil {
				sound = s
			}
		}
	}
	if !notify {
		return false, false, ""
	}
	return notify, highlight, sound
}

func ruleMatches(k Kind, r *Rule, ev *Event, ctx EvalContext) bool {
	switch k {
	case Content:
		body, ok := ev.body()
		return ok && r.Pattern != "" && globMatcher(r.Pattern, modeWords).MatchString(body)
	case Room:
		return ev.roomID != "" && ev.roomID == r.RuleID
	case Sender:
		return ev.sender != "" && ev.sender == r.RuleID
	}
	for i := range r.Conditions {
		if !conditionMatches(&r.Conditions[i], ev, ctx) {
			return false
		}
	}
	return true
}

var bodyPath = []string{"content", "body"}

// body is content.body, which content rules and contains_display_name
// match against.
func (e *Event) body() (string, bool) {
	v, _ := e.lookupParts(bodyPath)
	s, ok := v.(string)
	return s, ok
}

func conditionMatches(c *Condition, ev *Event, ctx EvalContext) bool {
	switch c.Kind {
	case CondEventMatch:
		if c.Key == "" || c.Pattern == nil {
			return false
		}
		v, _ := ev.lookupKey(c)
		s, ok := v.(string)
		if !ok {
			return false
		}
		// content.body matches on word boundaries (spec, event_match).
		if c.Key == "content.body" {
			return globMatcher(*c.Pattern, modeWords).MatchString(s)
		}
		if !strings.ContainsAny(*c.Pattern, "*?") {
			return strings.EqualFold(*c.Pattern, s)
		}
		return globMatcher(*c.Pattern, modeWhole).MatchString(s)
	case CondEventPropertyIs:
		want, ok := c.value()
		if !ok || c.Key == "" {
			return false
		}
		got, ok := ev.lookupKey(c)
		return ok && scalarEqual(got, want)
	case CondEventPropertyContains:
		want, ok := c.value()
		if !ok || c.Key == "" {
			return false
		}
		got, ok := ev.lookupKey(c)
		arr, isArr := got.([]any)
		if !ok || !isArr {
			return false
		}
		for _, v := range arr {
			if scalarEqual(v, want) {
				return true
			}
		}
		return false
	case CondContainsDisplayName:
		body, ok := ev.body()
		return ok && ctx.DisplayName != "" && globMatcher(ctx.DisplayName, modeLiteralWords).MatchString(body)
	case CondRoomMemberCount:
		cmp, n, ok := parseMemberCount(c.Is)
		return ok && cmp(ctx.MemberCount, n)
	case CondSenderNotificationPermission:
		return c.Key != "" && ctx.SenderNotificationPermission != nil && ctx.SenderNotificationPermission(c.Key)
	}
	// Unknown conditions never match (spec, "Conditions").
	return false
}

// value is the condition's decoded value, if it is one that
// event_property_is/contains can compare.
func (c *Condition) value() (any, bool) {
	if c.hasParsed {
		return c.parsed, true
	}
	if c.Value == nil {
		return nil, false
	}
	return decodeValue(c.Value)
}

// decodeValue decodes a non-compound canonical JSON value: a string, an
// integer in [-(2^53)+1, 2^53-1], a boolean or null. Integers become
// int64 so that they compare exactly.
func decodeValue(raw json.RawMessage) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return nil, false
	}
	return scalar(v)
}

const maxCanonicalInt = 1<<53 - 1

func scalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n > maxCanonicalInt || n < -maxCanonicalInt {
			return nil, false
		}
		return n, true
	}
	return nil, false
}

// scalarEqual compares an event value with a decoded condition value.
// Types are never converted: "true" is not true and 1 is not "1".
func scalarEqual(got, want any) bool {
	g, ok := scalar(got)
	return ok && g == want
}

// parseMemberCount reads room_member_count's "is": a decimal integer,
// optionally prefixed by ==, <, >, <= or >= (== when none).
func parseMemberCount(is string) (func(count, n int) bool, int, bool) {
	cmp := func(c, n int) bool { return c == n }
	rest := is
	for _, op := range []struct {
		prefix string
		f      func(c, n int) bool
	}{
		{"==", func(c, n int) bool { return c == n }},
		{"<=", func(c, n int) bool { return c <= n }},
		{">=", func(c, n int) bool { return c >= n }},
		{"<", func(c, n int) bool { return c < n }},
		{">", func(c, n int) bool { return c > n }},
	} {
		if strings.HasPrefix(is, op.prefix) {
			cmp, rest = op.f, is[len(op.prefix):]
			break
		}
	}
	if rest == "" || len(rest) > 9 || strings.Trim(rest, "0123456789") != "" {
		return nil, 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return nil, 0, false
	}
	return cmp, n, true
}

type globMode int

const (
	// modeWhole: the glob must match the whole value.
	modeWhole globMode = iota
	// modeWords: the glob must match a substring that starts and ends at
	// word boundaries (content.body).
	modeWords
	// modeLiteralWords: like modeWords, for a literal string (a display
	// name, in which * and ? are ordinary characters).
	modeLiteralWords
)

type globKey struct {
	pattern string
	mode    globMode
}

// globCache holds compiled globs. Patterns come from users' rules, so the
// cache is emptied when it grows too large rather than kept forever.
var globCache struct {
	sync.Mutex
	m map[globKey]*regexp.Regexp
}

const maxGlobCache = 4096

// notWordChar is a word boundary character: any but [A-Z], [a-z], [0-9]
// and _ (spec, event_match).
const notWordChar = `[^A-Za-z0-9_]`

func globMatcher(pattern string, mode globMode) *regexp.Regexp {
	key := globKey{pattern, mode}
	globCache.Lock()
	re := globCache.m[key]
	globCache.Unlock()
	if re != nil {
		return re
	}
	var b strings.Builder
	// (?s): ? and * match newlines too. (?i) (Unicode simple case
	// folding) covers the pattern only: folded into the boundary class it
	// would turn the Kelvin sign and long s into word characters.
	b.WriteString(`(?s)`)
	if mode == modeWhole {
		b.WriteString(`\A(?i:`)
	} else {
		b.WriteString(`(?:\A|` + notWordChar + `)(?i:`)
	}
	if mode == modeLiteralWords {
		b.WriteString(regexp.QuoteMeta(pattern))
	} else {
		for _, r := range pattern {
			switch r {
			case '*':
				b.WriteString(`.*`)
			case '?':
				b.WriteString(`.`)
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
	}
	if mode == modeWhole {
		b.WriteString(`)\z`)
	} else {
		b.WriteString(`)(?:` + notWordChar + `|\z)`)
	}
	re = regexp.MustCompile(b.String())
	globCache.Lock()
	if globCache.m == nil || len(globCache.m) >= maxGlobCache {
		globCache.m = map[globKey]*regexp.Regexp{}
	}
	globCache.m[key] = re
	globCache.Unlock()
	return re
}
