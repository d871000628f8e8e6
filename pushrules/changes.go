package pushrules

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// AccountDataType is the account data type (global, room "") under which
// a user's Changes are stored.
const AccountDataType = "m.push_rules"

// Changes are what a user changed relative to the server-default rules:
// the user-defined rules, and the enabled flags and actions of the
// server-default rules that differ from the defaults.
//
// Veche stores them (Encode) as the user's global m.push_rules account
// data entry:
//
//	{"global":   {"override": [...], "content": [...], "room": [...],
//	              "sender": [...], "underride": [...]},
//	 "defaults": {"override": {".m.rule.master": {"enabled": true}},
//	              "underride": {".m.rule.message": {"actions": []}}}}
//
// "global" is the user's whole ruleset as of the write, so that the entry
// is valid m.push_rules content for readers that serve account data as
// stored (GET /user/{userId}/account_data/m.push_rules, incremental
// /sync). Its server-default entries (IDs starting with ".") are only that
// snapshot: ParseChanges ignores them, and reads (ForUser) rebuild the
// server-default rules from this version's definitions plus "defaults",
// so that a default rule added or corrected later reaches existing users
// and a user's change to a default rule is never confused with an old
// definition of it.
type Changes struct {
	// Rules are the user-defined rules, each kind in priority order.
	Rules Rules `json:"global"`
	// Defaults are the changes to server-default rules by kind and ID.
	Defaults map[Kind]map[string]DefaultChange `json:"defaults,omitempty"`
}

// DefaultChange is a user's change to one server-default rule; nil fields
// keep the default.
type DefaultChange struct {
	Enabled *bool     `json:"enabled,omitempty"`
	Actions *[]Action `json:"actions,omitempty"`
}

// Encode returns the stored form of the changes for userID. (Plain
// json.Marshal leaves the snapshot of the default rules out; ParseChanges
// reads either.)
func (c Changes) Encode(userID string) (json.RawMessage, error) {
	return json.Marshal(struct {
		Global   Rules                             `json:"global"`
		Defaults map[Kind]map[string]DefaultChange `json:"defaults,omitempty"`
	}{c.Apply(userID).Global, c.Defaults})
}

// ParseChanges reads stored changes; nil or empty input is no changes.
// The server-default entries of "global" are skipped (see Changes). It is
// lenient: a stored rule that is not valid (any more) is dropped rather
// than failing the whole set. The error is only for input that is
// not a JSON object of the expected shape, and then the Changes are
// empty.
func ParseChanges(stored json.RawMessage) (Changes, error) {
	var c Changes
	if len(bytes.TrimSpace(stored)) == 0 {
		return c, nil
	}
	var raw struct {
		Global   map[Kind][]json.RawMessage        `json:"global"`
		Defaults map[Kind]map[string]DefaultChange `json:"defaults"`
	}
	if err := json.Unmarshal(stored, &raw); err != nil {
		return Changes{}, err
	}
	for _, k := range Kinds {
		seen := map[string]bool{}
		for _, item := range raw.Global[k] {
			var r Rule
			if json.Unmarshal(item, &r) != nil || ValidateRuleID(k, r.RuleID) != nil || seen[r.RuleID] {
				continue
			}
			if r = normalize(k, r); k == Content && r.Pattern == "" {
				continue
			}
			seen[r.RuleID] = true
			list := c.Rules.Of(k)
			*list = append(*list, r)
		}
	}
	for k, byID := range raw.Defaults {
		for id, ch := range byID {
			if _, ok := ParseKind(string(k)); ok {
				c.setDefault(k, id, ch)
			}
		}
	}
	return c, nil
}

// normalize gives a user-defined rule exactly the fields its kind shows.
func normalize(k Kind, r Rule) Rule {
	r.Default = false
	if r.Actions == nil {
		r.Actions = []Action{}
	}
	switch k {
	case Override, Underride:
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
		r.Pattern = ""
	case Content:
		r.Conditions = nil
	default:
		r.Conditions, r.Pattern = nil, ""
	}
	return r
}

// Apply returns the user's ruleset: the server-default rules for userID
// with the changes applied, and the user-defined rules placed as the spec
// orders them: above the server-default rules of their kind, except that
// .m.rule.master always comes first.
func (c Changes) Apply(userID string) Ruleset {
	d := Defaults(userID)
	for _, k := range Kinds {
		list := *d.Of(k)
		for i := range list {
			ch, ok := c.Defaults[k][list[i].RuleID]
			if !ok {
				continue
			}
			if ch.Enabled != nil {
				list[i].Enabled = *ch.Enabled
			}
			if ch.Actions != nil {
				list[i].Actions = slices.Clone(*ch.Actions)
			}
		}
	}
	var out Ruleset
	for _, k := range Kinds {
		defaults := *d.Of(k)
		var first []Rule
		if k == Override && len(defaults) > 0 && defaults[0].RuleID == RuleMaster {
			first, defaults = defaults[:1], defaults[1:]
		}
		merged := make([]Rule, 0, len(first)+len(*c.Rules.Of(k))+len(defaults))
		merged = append(merged, first...)
		for _, r := range *c.Rules.Of(k) {
			merged = append(merged, r.clone())
		}
		*out.Global.Of(k) = append(merged, defaults...)
	}
	return out
}

// ForUser returns the rules a user sees (GET /pushrules/, the m.push_rules
// event of /sync): the server-default rules for userID merged with the
// stored changes, the content of the user's global m.push_rules account
// data entry (nil when there is none). Stored data that cannot be read
// counts as no changes. displayName is accepted for rules that depend on
// it; those of spec v1.19 do not (the display name is matched at
// evaluation time, through EvalContext).
func ForUser(stored json.RawMessage, userID, displayName string) Ruleset {
	c, _ := ParseChanges(stored)
	return c.Apply(userID)
}

// Put adds a user-defined rule of kind k, or replaces the one with the
// same ID. A new rule is enabled; a replaced one keeps its enabled flag
// and, without before/after, its place. before (which wins when both are
// given) puts the rule just above another user-defined rule, after just
// below one; without either, a new rule becomes the kind's most important
// user-defined rule (spec, PUT /pushrules/global/{kind}/{ruleId}).
func (c *Changes) Put(k Kind, r Rule, before, after string) error {
	if err := ValidateRuleID(k, r.RuleID); err != nil {
		return err
	}
	if strings.HasPrefix(before, ".") || strings.HasPrefix(after, ".") {
		return fail(ErrServerDefault, "Rules cannot be placed relative to a server-default rule")
	}
	r = normalize(k, r.clone())
	r.Enabled = true
	list := c.Rules.Of(k)
	idx := slices.IndexFunc(*list, func(x Rule) bool { return x.RuleID == r.RuleID })
	if idx >= 0 {
		r.Enabled = (*list)[idx].Enabled
	}
	if before == "" && after == "" {
		if idx >= 0 {
			*list = slices.Clone(*list)
			(*list)[idx] = r
		} else {
			*list = append([]Rule{r}, *list...)
		}
		return nil
	}
	rest := slices.Clone(*list)
	if idx >= 0 {
		rest = slices.Delete(rest, idx, idx+1)
	}
	anchor, offset := before, 0
	if before == "" {
		anchor, offset = after, 1
	}
	j := slices.IndexFunc(rest, func(x Rule) bool { return x.RuleID == anchor })
	if j < 0 {
		// The spec's own example message.
		return fail(ErrAnchorNotFound, "before/after rule not found: %s", anchor)
	}
	*list = slices.Insert(rest, j+offset, r)
	return nil
}

// Delete removes a user-defined rule.
func (c *Changes) Delete(k Kind, ruleID string) error {
	if _, ok := defaultRule(k, ruleID); ok {
		return fail(ErrServerDefault, "Server-default rules cannot be deleted")
	}
	list := c.Rules.Of(k)
	idx := slices.IndexFunc(*list, func(x Rule) bool { return x.RuleID == ruleID })
	if idx < 0 {
		return fail(ErrNotFound, "The push rule was not found")
	}
	*list = slices.Delete(slices.Clone(*list), idx, idx+1)
	return nil
}

// SetEnabled enables or disables any rule, server-default ones included.
func (c *Changes) SetEnabled(k Kind, ruleID string, enabled bool) error {
	if d, ok := defaultRule(k, ruleID); ok {
		ch := c.Defaults[k][ruleID]
		ch.Enabled = &enabled
		if enabled == d.Enabled {
			ch.Enabled = nil
		}
		c.setDefault(k, ruleID, ch)
		return nil
	}
	r := c.Rules.Find(k, ruleID)
	if r == nil {
		return fail(ErrNotFound, "The push rule was not found")
	}
	r.Enabled = enabled
	return nil
}

// SetActions changes the actions of any rule, server-default ones
// included (validate them with ParseActions first).
func (c *Changes) SetActions(k Kind, ruleID string, actions []Action) error {
	actions = slices.Clone(actions)
	if actions == nil {
		actions = []Action{}
	}
	if d, ok := defaultRule(k, ruleID); ok {
		ch := c.Defaults[k][ruleID]
		ch.Actions = &actions
		if sameActions(actions, d.Actions) {
			ch.Actions = nil
		}
		c.setDefault(k, ruleID, ch)
		return nil
	}
	r := c.Rules.Find(k, ruleID)
	if r == nil {
		return fail(ErrNotFound, "The push rule was not found")
	}
	r.Actions = actions
	return nil
}

// setDefault records a change to a server-default rule, forgetting it
// when it changes nothing, or the rule is no (longer a) default one.
func (c *Changes) setDefault(k Kind, ruleID string, ch DefaultChange) {
	_, isDefault := defaultRule(k, ruleID)
	if !isDefault || ch.Enabled == nil && ch.Actions == nil {
		if c.Defaults[k] != nil {
			delete(c.Defaults[k], ruleID)
			if len(c.Defaults[k]) == 0 {
				delete(c.Defaults, k)
			}
		}
		return
	}
	if c.Defaults == nil {
		c.Defaults = map[Kind]map[string]DefaultChange{}
	}
	if c.Defaults[k] == nil {
		c.Defaults[k] = map[string]DefaultChange{}
	}
	c.Defaults[k][ruleID] = ch
}

func sameActions(a, b []Action) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
