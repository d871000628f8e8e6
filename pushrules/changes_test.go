package pushrules

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func ids(rules []Rule) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.RuleID)
	}
	return out
}

func userRule(id string) Rule {
	return Rule{RuleID: id, Enabled: true, Conditions: []Condition{}, Actions: []Action{ActionNotify}}
}

func TestPutOrdering(t *testing.T) {
	steps := []struct {
		id, before, after string
		want              []string
		err               error
	}{
		{id: "a", want: []string{"a"}},
		{id: "b", want: []string{"b", "a"}}, // new rules go first
		{id: "c", after: "a", want: []string{"b", "a", "c"}},
		{id: "d", before: "a", want: []string{"b", "d", "a", "c"}},
		{id: "a", want: []string{"b", "d", "a", "c"}},                          // replacing keeps the place
		{id: "a", before: "b", want: []string{"a", "b", "d", "c"}},             // moving
		{id: "c", before: "b", after: "d", want: []string{"a", "c", "b", "d"}}, // before wins
		{id: "e", after: "nope", err: ErrAnchorNotFound},
		{id: "a", before: "a", err: ErrAnchorNotFound},
		{id: "e", before: RuleMessage, err: ErrServerDefault},
		{id: ".mine", err: ErrInvalidRuleID},
		{id: "a/b", err: ErrInvalidRuleID},
		{id: `a\b`, err: ErrInvalidRuleID},
		{id: "", err: ErrInvalidRuleID},
	}
	var c Changes
	for _, s := range steps {
		before := slices.Clone(ids(c.Rules.Override))
		err := c.Put(Override, userRule(s.id), s.before, s.after)
		if s.err != nil {
			if !errors.Is(err, s.err) {
				t.Fatalf("Put(%q, before=%q, after=%q) = %v, want %v", s.id, s.before, s.after, err, s.err)
			}
			if got := ids(c.Rules.Override); !reflect.DeepEqual(got, before) {
				t.Fatalf("failed Put changed the rules: %v -> %v", before, got)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Put(%q, before=%q, after=%q): %v", s.id, s.before, s.after, err)
		}
		if got := ids(c.Rules.Override); !reflect.DeepEqual(got, s.want) {
			t.Fatalf("after Put(%q, before=%q, after=%q): %v, want %v", s.id, s.before, s.after, got, s.want)
		}
	}
	if err := (&Changes{}).Put(Override, userRule("x"), "", ""); err != nil {
		t.Fatal(err)
	}

	// The merged ruleset puts user rules above the defaults of their kind,
	// except that the master rule stays first.
	got := ids(c.Apply(me).Global.Override)
	want := []string{RuleMaster, "a", "c", "b", "d", RuleSuppressNotices}
	if !reflect.DeepEqual(got[:len(want)], want) || len(got) != 4+len(specDefaults[Override]) {
		t.Errorf("merged override rules = %v", got)
	}
	if err := c.Put(Underride, userRule("u"), "", ""); err != nil {
		t.Fatal(err)
	}
	if got := ids(c.Apply(me).Global.Underride); got[0] != "u" || got[1] != RuleCall {
		t.Errorf("merged underride rules = %v", got)
	}
}

func TestReplaceKeepsEnabled(t *testing.T) {
	var c Changes
	if err := c.Put(Override, userRule("a"), "", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEnabled(Override, "a", false); err != nil {
		t.Fatal(err)
	}
	r := userRule("a")
	r.Actions = []Action{}
	if err := c.Put(Override, r, "", ""); err != nil {
		t.Fatal(err)
	}
	got := c.Rules.Find(Override, "a")
	if got.Enabled || len(got.Actions) != 0 {
		t.Errorf("replaced rule = %+v", got)
	}
}

func TestDeleteEnabledActions(t *testing.T) {
	var c Changes
	if err := c.Put(Content, Rule{RuleID: "cake", Pattern: "cake", Actions: []Action{ActionNotify}}, "", ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func() error
		err  error
	}{
		{"delete default", func() error { return c.Delete(Underride, RuleMessage) }, ErrServerDefault},
		{"delete unknown", func() error { return c.Delete(Content, "pie") }, ErrNotFound},
		{"delete in other kind", func() error { return c.Delete(Override, "cake") }, ErrNotFound},
		{"enable unknown", func() error { return c.SetEnabled(Room, "!r:example.org", true) }, ErrNotFound},
		{"enable default of other kind", func() error { return c.SetEnabled(Underride, RuleMaster, true) }, ErrNotFound},
		{"actions unknown", func() error { return c.SetActions(Sender, "@x:example.org", nil) }, ErrNotFound},
		{"disable user rule", func() error { return c.SetEnabled(Content, "cake", false) }, nil},
		{"enable master", func() error { return c.SetEnabled(Override, RuleMaster, true) }, nil},
		{"disable message", func() error { return c.SetEnabled(Underride, RuleMessage, false) }, nil},
		{"silence calls", func() error { return c.SetActions(Underride, RuleCall, []Action{ActionNotify}) }, nil},
		{"user rule actions", func() error { return c.SetActions(Content, "cake", []Action{}) }, nil},
	}
	for _, tt := range tests {
		if err := tt.op(); !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
	rs := c.Apply(me)
	if r := rs.Global.Find(Content, "cake"); r == nil || r.Enabled || len(r.Actions) != 0 || r.Pattern != "cake" || r.Conditions != nil {
		t.Errorf("cake = %+v", r)
	}
	if r := rs.Global.Find(Override, RuleMaster); !r.Enabled {
		t.Error("master not enabled")
	}
	if r := rs.Global.Find(Underride, RuleMessage); r.Enabled {
		t.Error(".m.rule.message not disabled")
	}
	if r := rs.Global.Find(Underride, RuleCall); len(r.Actions) != 1 || !r.Actions[0].IsNotify() {
		t.Errorf(".m.rule.call actions = %s", r.Actions)
	}

	// Only what differs from the defaults is stored: setting a default
	// rule back forgets the change.
	stored, _ := c.Encode(me)
	if !strings.Contains(string(stored), `"defaults":{"override":{".m.rule.master":{"enabled":true}},"underride":{".m.rule.call":{"actions":["notify"]},".m.rule.message":{"enabled":false}}}`) {
		t.Errorf("stored = %s", stored)
	}
	_ = c.SetEnabled(Override, RuleMaster, false)
	_ = c.SetEnabled(Underride, RuleMessage, true)
	_ = c.SetActions(Underride, RuleCall, Defaults(me).Underride[0].Actions)
	if len(c.Defaults) != 0 {
		t.Errorf("defaults after reset = %v", c.Defaults)
	}
	if err := c.Delete(Content, "cake"); err != nil || len(c.Rules.Content) != 0 {
		t.Errorf("delete = %v, %v", err, c.Rules.Content)
	}
}

func TestStorageRoundTrip(t *testing.T) {
	var c Changes
	mustPut := func(k Kind, body, id string) {
		t.Helper()
		var b RuleBody
		_ = json.Unmarshal([]byte(body), &b)
		r, err := b.Rule(k, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Put(k, r, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(Override, `{"conditions":[{"kind":"event_match","key":"content.body","pattern":"beer"},{"kind":"org.example.future","x":1}],"actions":["notify"]}`, "beer")
	mustPut(Content, `{"pattern":"cake*lie","actions":["notify",{"set_tweak":"sound","value":"a<b"}]}`, "cake")
	mustPut(Room, `{"actions":[],"conditions":[{"kind":"ignored"}],"pattern":"ignored"}`, "!r:example.org")
	mustPut(Sender, `{"actions":[]}`, "@spam:example.org")
	_ = c.SetEnabled(Override, RuleMaster, true)
	stored, err := c.Encode(me)
	if err != nil {
		t.Fatal(err)
	}
	// The stored "global" is the whole ruleset as of the write: valid
	// m.push_rules content for readers that do not merge.
	var shape Ruleset
	if err := json.Unmarshal(stored, &shape); err != nil {
		t.Fatal(err)
	}
	if got, want := asJSON(t, shape), asJSON(t, c.Apply(me)); !reflect.DeepEqual(got, want) {
		t.Errorf("stored global = %v\nwant %v", got, want)
	}
	var room struct {
		Global struct {
			Room []map[string]any `json:"room"`
		} `json:"global"`
	}
	if _ = json.Unmarshal(stored, &room); len(room.Global.Room) != 1 || room.Global.Room[0]["conditions"] != nil || room.Global.Room[0]["pattern"] != nil {
		t.Errorf("stored room rules = %v", room.Global.Room)
	}
	cake := ForUser(stored, me, "").Global.Find(Content, "cake")
	var sound string
	if name, value, ok := cake.Actions[1].Tweak(); !ok || name != "sound" || json.Unmarshal(value, &sound) != nil || sound != "a<b" {
		t.Errorf("stored actions are not kept as sent: %s", stored)
	}
	if got, want := asJSON(t, ForUser(stored, me, "Alice")), asJSON(t, c.Apply(me)); !reflect.DeepEqual(got, want) {
		t.Errorf("ForUser(stored) = %v\nwant %v", got, want)
	}
}

func TestForUser(t *testing.T) {
	defaults := asJSON(t, Ruleset{Global: Defaults(me)})
	tests := []struct {
		name, stored string
		check        func(t *testing.T, rs Ruleset)
	}{
		{"nothing stored", "", nil},
		{"not JSON", "{", nil},
		{"wrong shape", `{"global":[]}`, nil},
		{"empty object", `{}`, nil},
		{"server-default rules in global are ignored", `{"global":{"override":[{"rule_id":".m.rule.master","default":true,"enabled":true,"conditions":[],"actions":[]}]}}`, nil},
		{"changes to unknown rules are ignored", `{"defaults":{"override":{".m.rule.gone":{"enabled":true}},"nonsense":{"x":{}}}}`, nil},
		{"bad rules are dropped, good ones kept", `{"global":{
			"room":[{"rule_id":"not-a-room","actions":[]},{"rule_id":"!ok:example.org","enabled":false,"default":true,"actions":[]}],
			"content":[{"rule_id":"nopattern","actions":[]},{"rule_id":"dup","pattern":"a","actions":[]},{"rule_id":"dup","pattern":"b","actions":[]}],
			"override":["junk",{"rule_id":"x","actions":["notify"]}]}}`,
			func(t *testing.T, rs Ruleset) {
				if got := ids(rs.Global.Room); !reflect.DeepEqual(got, []string{"!ok:example.org"}) {
					t.Errorf("room = %v", got)
				}
				if r := rs.Global.Room[0]; r.Default || r.Enabled {
					t.Errorf("room rule = %+v", r)
				}
				if got := ids(rs.Global.Content); !reflect.DeepEqual(got, []string{"dup"}) || rs.Global.Content[0].Pattern != "a" {
					t.Errorf("content = %v", rs.Global.Content)
				}
				// A stored override rule without conditions gets "conditions": [].
				if r := rs.Global.Find(Override, "x"); r == nil || r.Conditions == nil {
					t.Errorf("override x = %+v", r)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := ForUser(json.RawMessage(tt.stored), me, "")
			if tt.check != nil {
				tt.check(t, rs)
				return
			}
			if got := asJSON(t, rs); !reflect.DeepEqual(got, defaults) {
				t.Errorf("ForUser = %v, want the defaults", got)
			}
		})
	}
}

func TestRuleBody(t *testing.T) {
	tests := []struct {
		kind Kind
		id   string
		body string
		err  error
		want string // the rule's JSON when valid
	}{
		{Override, "x", `{"actions":["notify"]}`, nil, `{"rule_id":"x","default":false,"enabled":true,"conditions":[],"actions":["notify"]}`},
		{Override, "x", `{"actions":["notify"],"conditions":null}`, nil, `{"rule_id":"x","default":false,"enabled":true,"conditions":[],"actions":["notify"]}`},
		{Override, "x", `{"actions":["dont_notify","coalesce"],"conditions":[]}`, nil, `{"rule_id":"x","default":false,"enabled":true,"conditions":[],"actions":[]}`},
		{Underride, "x", `{"actions":[{"value":"ding","set_tweak":"sound"}],"conditions":[{"kind":"room_member_count","is":">=3"}]}`, nil,
			`{"rule_id":"x","default":false,"enabled":true,"conditions":[{"kind":"room_member_count","is":">=3"}],"actions":[{"set_tweak":"sound","value":"ding"}]}`},
		{Content, "x", `{"actions":[],"pattern":"cake"}`, nil, `{"rule_id":"x","default":false,"enabled":true,"pattern":"cake","actions":[]}`},
		{Room, "!r:example.org", `{"actions":[]}`, nil, `{"rule_id":"!r:example.org","default":false,"enabled":true,"actions":[]}`},
		{Sender, "@s:example.org", `{"actions":[],"pattern":"x","conditions":5}`, nil, `{"rule_id":"@s:example.org","default":false,"enabled":true,"actions":[]}`},

		{Override, "x", `{}`, ErrMissingField, ""},
		{Override, "x", `{"actions":null}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":"notify"}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":["shout"]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[5]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[{"value":1}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[{"set_tweak":""}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":{}}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":["event_match"]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"key":"type"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":5}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_match","key":"type"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_match","pattern":"x"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_match","key":5,"pattern":"x"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_property_is","key":"type"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_property_is","key":"type","value":1.5}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_property_contains","key":"type","value":[1]}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"event_property_is","key":"type","value":9007199254740992}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"room_member_count","is":"a lot"}]}`, ErrInvalidRule, ""},
		{Override, "x", `{"actions":[],"conditions":[{"kind":"sender_notification_permission"}]}`, ErrInvalidRule, ""},
		{Content, "x", `{"actions":[]}`, ErrMissingField, ""},
		{Content, "x", `{"actions":[],"pattern":""}`, ErrInvalidRule, ""},
		{Content, "x", `{"actions":[],"pattern":7}`, ErrInvalidRule, ""},
	}
	for _, tt := range tests {
		var b RuleBody
		if err := json.Unmarshal([]byte(tt.body), &b); err != nil {
			t.Fatalf("%s: %v", tt.body, err)
		}
		r, err := b.Rule(tt.kind, tt.id)
		if tt.err != nil {
			var pe *Error
			if !errors.Is(err, tt.err) || !errors.As(err, &pe) || pe.Error() == "" {
				t.Errorf("%s %s: %v, want %v", tt.kind, tt.body, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tt.kind, tt.body, err)
			continue
		}
		var want any
		_ = json.Unmarshal([]byte(tt.want), &want)
		if got := asJSON(t, r); !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s:\n got %v\nwant %s", tt.kind, tt.body, got, tt.want)
		}
	}
}

func TestValidateRuleID(t *testing.T) {
	tests := []struct {
		kind Kind
		id   string
		ok   bool
	}{
		{Override, "my.rule", true},
		{Override, ".m.rule.master", false},
		{Override, ".custom", false},
		{Content, "a/b", false},
		{Content, `a\b`, false},
		{Underride, "", false},
		{Room, "!room:example.org", true},
		{Room, "#alias:example.org", false},
		{Room, "room", false},
		{Sender, "@user:example.org", true},
		{Sender, "user", false},
	}
	for _, tt := range tests {
		err := ValidateRuleID(tt.kind, tt.id)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrInvalidRuleID) {
			t.Errorf("ValidateRuleID(%s, %q) = %v", tt.kind, tt.id, err)
		}
	}
}
