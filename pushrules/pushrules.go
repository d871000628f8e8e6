// Package pushrules implements the push rules of the Client-Server API
// (spec v1.19, "Push Rules"): the server-default rules, the user's changes
// to them as Veche stores them, and the evaluator that decides whether an
// event notifies a user.
//
// The rules a client sees are always computed: the server-default rules of
// this version of Veche with the user's changes applied (ForUser). Only the
// changes are stored, so that a default rule added or corrected in a later
// version reaches existing users.
package pushrules

import (
	"encoding/json"
	"errors"
)

// Kind is a kind of push rule. Kinds are evaluated in the order of Kinds.
type Kind string

// The kinds of push rules.
const (
	Override  Kind = "override"
	Content   Kind = "content"
	Room      Kind = "room"
	Sender    Kind = "sender"
	Underride Kind = "underride"
)

// Kinds lists the kinds in evaluation order, highest priority first.
var Kinds = []Kind{Override, Content, Room, Sender, Underride}

// ParseKind checks a kind from a request path.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Rule is one push rule as the spec's PushRule schema shows it.
type Rule struct {
	RuleID  string
	Default bool
	Enabled bool
	// Conditions are those of override and underride rules. They are nil
	// for the other kinds, whose conditions are implied (and not shown).
	Conditions []Condition
	// Pattern is a content rule's glob.
	Pattern string
	Actions []Action
}

type wireRule struct {
	RuleID     string       `json:"rule_id"`
	Default    bool         `json:"default"`
	Enabled    bool         `json:"enabled"`
	Conditions *[]Condition `json:"conditions,omitempty"`
	Pattern    string       `json:"pattern,omitempty"`
	Actions    []Action     `json:"actions"`
}

// MarshalJSON writes conditions whenever the rule has them, even none:
// `.m.rule.master` is shown with "conditions": [] (a rule that matches
// everything), which is not the same as a rule without conditions.
func (r Rule) MarshalJSON() ([]byte, error) {
	w := wireRule{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions}
	if r.Conditions != nil {
		w.Conditions = &r.Conditions
	}
	if w.Actions == nil {
		w.Actions = []Action{}
	}
	return json.Marshal(w)
}

// UnmarshalJSON is the reverse of MarshalJSON.
func (r *Rule) UnmarshalJSON(b []byte) error {
	var w wireRule
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Rule{RuleID: w.RuleID, Default: w.Default, Enabled: w.Enabled, Pattern: w.Pattern, Actions: w.Actions}
	if w.Conditions != nil {
		r.Conditions = *w.Conditions
	}
	return nil
}

// clone copies the rule so that changing the copy's slices leaves the
// original alone.
func (r Rule) clone() Rule {
	if r.Conditions != nil {
		r.Conditions = append([]Condition{}, r.Conditions...)
	}
	r.Actions = append([]Action{}, r.Actions...)
	return r
}

// Rules are the rules of each kind, each list in priority order: the
// spec's Ruleset, found under "global".
type Rules struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Of returns the list of kind k.
func (r *Rules) Of(k Kind) *[]Rule {
	switch k {
	case Override:
		return &r.Override
	case Content:
		return &r.Content
	case Room:
		return &r.Room
	case Sender:
		return &r.Sender
	case Underride:
		return &r.Underride
	}
	panic("pushrules: unknown kind " + string(k))
}

// Find returns the rule of kind k with the ID, or nil. The rule is the
// one in the list (the lists are shared with r), so changes to it stick.
func (r Rules) Find(k Kind, ruleID string) *Rule {
	list := *r.Of(k)
	for i := range list {
		if list[i].RuleID == ruleID {
			return &list[i]
		}
	}
	return nil
}

// MarshalJSON writes every kind as an array, empty ones too: clients
// (matrix-js-sdk among them) iterate over the kinds without checking.
func (r Rules) MarshalJSON() ([]byte, error) {
	type plain Rules
	p := plain(r)
	for _, l := range []*[]Rule{&p.Override, &p.Content, &p.Room, &p.Sender, &p.Underride} {
		if *l == nil {
			*l = []Rule{}
		}
	}
	return json.Marshal(p)
}

// Ruleset is the content of the m.push_rules account data event and the
// answer of GET /pushrules/.
type Ruleset struct {
	Global Rules `json:"global"`
}

// Condition is one condition of an override or underride rule. Fields a
// condition kind does not use stay empty; unknown kinds and fields are
// kept so that they survive a round trip (and, as the spec requires, an
// unknown kind never matches).
type Condition struct {
	Kind string
	Key  string
	// Pattern is a pointer because an empty pattern is meaningful:
	// `.m.rule.tombstone` matches state_key against "".
	Pattern *string
	// Is is room_member_count's comparison, such as "2" or "<=10".
	Is string
	// Value is the JSON of event_property_is/contains' value; nil when
	// absent, "null" when null.
	Value json.RawMessage

	extra map[string]json.RawMessage
	// path caches Key split into property names, for evaluation.
	path []string
	// parsed caches Value decoded, for evaluation.
	parsed    any
	hasParsed bool
}

// The condition kinds of the spec.
const (
	CondEventMatch                   = "event_match"
	CondEventPropertyIs              = "event_property_is"
	CondEventPropertyContains        = "event_property_contains"
	CondContainsDisplayName          = "contains_display_name"
	CondRoomMemberCount              = "room_member_count"
	CondSenderNotificationPermission = "sender_notification_permission"
)

// MarshalJSON writes the condition's fields plus any unknown ones it was
// read with.
func (c Condition) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(c.extra)+4)
	for k, v := range c.extra {
		m[k] = v
	}
	m["kind"] = c.Kind
	if c.Key != "" {
		m["key"] = c.Key
	}
	if c.Pattern != nil {
		m["pattern"] = *c.Pattern
	}
	if c.Is != "" {
		m["is"] = c.Is
	}
	if c.Value != nil {
		m["value"] = c.Value
	}
	return json.Marshal(m)
}

var errConditionKind = errors.New("a condition needs a string kind")

// UnmarshalJSON reads a condition. Known fields that are not strings are
// kept among the unknown ones: validation (ParseConditions) refuses them
// for the kinds that use them, and other kinds do not care.
func (c *Condition) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = Condition{}
	if raw, ok := m["kind"]; !ok || raw[0] != '"' || json.Unmarshal(raw, &c.Kind) != nil {
		return errConditionKind
	}
	delete(m, "kind")
	for _, f := range []struct {
		name string
		dst  *string
	}{{"key", &c.Key}, {"is", &c.Is}} {
		if raw, ok := m[f.name]; ok && json.Unmarshal(raw, f.dst) == nil && raw[0] == '"' {
			delete(m, f.name)
		}
	}
	if raw, ok := m["pattern"]; ok {
		var p string
		if json.Unmarshal(raw, &p) == nil && raw[0] == '"' {
			c.Pattern = &p
			delete(m, "pattern")
		}
	}
	if raw, ok := m["value"]; ok {
		c.Value = raw
		c.parsed, c.hasParsed = decodeValue(raw)
		delete(m, "value")
	}
	if len(m) > 0 {
		c.extra = m
	}
	if c.Key != "" {
		c.path = splitPath(c.Key)
	}
	return nil
}

// Action is one action of a rule: "notify", or an object such as
// {"set_tweak": "sound", "value": "default"}. It is kept as JSON so that
// tweaks Veche does not know pass through to clients untouched.
type Action json.RawMessage

// MarshalJSON writes the action as it is.
func (a Action) MarshalJSON() ([]byte, error) {
	if len(a) == 0 {
		return []byte("null"), nil
	}
	return a, nil
}

// UnmarshalJSON keeps a copy of the action's JSON.
func (a *Action) UnmarshalJSON(b []byte) error {
	*a = append((*a)[:0], b...)
	return nil
}

// ActionNotify is the notify action.
var ActionNotify = Action(`"notify"`)

// SetTweak returns a set_tweak action; a nil value leaves "value" out.
func SetTweak(name string, value any) Action {
	m := map[string]any{"set_tweak": name}
	if value != nil {
		m["value"] = value
	}
	b, _ := json.Marshal(m)
	return Action(b)
}

// IsNotify reports whether the action is notify.
func (a Action) IsNotify() bool {
	if string(a) == `"notify"` {
		return true
	}
	// Only an escaped spelling ("\u006eotify") needs decoding.
	var s string
	return len(a) > 0 && a[0] == '"' && json.Unmarshal(a, &s) == nil && s == "notify"
}

// Tweak returns a set_tweak action's tweak name and value (nil when the
// action has no value).
func (a Action) Tweak() (name string, value json.RawMessage, ok bool) {
	if len(a) == 0 || a[0] != '{' {
		return "", nil, false
	}
	var t struct {
		SetTweak *string         `json:"set_tweak"`
		Value    json.RawMessage `json:"value"`
	}
	if json.Unmarshal(a, &t) != nil || t.SetTweak == nil {
		return "", nil, false
	}
	return *t.SetTweak, t.Value, true
}
