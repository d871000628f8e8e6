package pushrules

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const me = "@alice:example.org"

// specDefaults are the "Definition" blocks of spec v1.19, "Predefined
// Rules", in the spec's order, with [the user's Matrix ID] filled in.
var specDefaults = map[Kind][]string{
	Override: {
		`{"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []}`,
		`{"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": []}`,
		`{"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
		  "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"},
		                 {"key": "content.membership", "kind": "event_match", "pattern": "invite"},
		                 {"key": "state_key", "kind": "event_match", "pattern": "@alice:example.org"}],
		  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
		`{"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
		  "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}], "actions": []}`,
		`{"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "@alice:example.org"}],
		  "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}`,
		`{"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
		                 {"kind": "sender_notification_permission", "key": "room"}],
		  "actions": ["notify", {"set_tweak": "highlight"}]}`,
		`{"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
		                 {"kind": "event_match", "key": "state_key", "pattern": ""}],
		  "actions": ["notify", {"set_tweak": "highlight"}]}`,
		`{"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}], "actions": []}`,
		`{"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
		                 {"kind": "event_match", "key": "state_key", "pattern": ""}], "actions": []}`,
		`{"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
		  "actions": []}`,
	},
	Underride: {
		`{"rule_id": ".m.rule.call", "default": true, "enabled": true,
		  "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}],
		  "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]}`,
		`{"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
		  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
		  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
		`{"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
		  "conditions": [{"kind": "room_member_count", "is": "2"}, {"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
		  "actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
		`{"rule_id": ".m.rule.message", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}], "actions": ["notify"]}`,
		`{"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
		  "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}], "actions": ["notify"]}`,
	},
}

func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDefaultsAreTheSpecs(t *testing.T) {
	d := Defaults(me)
	for _, k := range Kinds {
		got := *d.Of(k)
		want := specDefaults[k]
		if len(got) != len(want) {
			t.Fatalf("%s: %d default rules, want %d", k, len(got), len(want))
		}
		for i := range want {
			var w any
			if err := json.Unmarshal([]byte(want[i]), &w); err != nil {
				t.Fatalf("%s %d: %v", k, i, err)
			}
			if g := asJSON(t, got[i]); !reflect.DeepEqual(g, w) {
				t.Errorf("%s rule %d:\n got %v\nwant %v", k, i, g, w)
			}
		}
	}
	// The whole ruleset has every kind as an array, even empty ones.
	raw, _ := json.Marshal(Ruleset{Global: d})
	for _, k := range []string{`"content":[]`, `"room":[]`, `"sender":[]`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("ruleset %s lacks %s", raw, k)
		}
	}
	// The legacy body-matching rules are gone since v1.17 (MSC4210).
	for _, id := range []string{".m.rule.contains_display_name", ".m.rule.contains_user_name", ".m.rule.roomnotif"} {
		if strings.Contains(string(raw), id) {
			t.Errorf("ruleset has the removed rule %s", id)
		}
	}
}

func TestRuleJSONRoundTrip(t *testing.T) {
	d := Defaults(me)
	for _, k := range Kinds {
		for _, r := range *d.Of(k) {
			b, _ := json.Marshal(r)
			var back Rule
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(asJSON(t, back), asJSON(t, r)) {
				t.Errorf("round trip of %s: %s", r.RuleID, b)
			}
		}
	}
	// Unknown condition kinds and fields survive.
	in := `{"rule_id":"x","default":false,"enabled":true,"conditions":[{"kind":"org.example.cond","key":5,"foo":{"a":[1,2]}}],"actions":["notify",{"set_tweak":"org.example","value":{"x":1}}]}`
	var r Rule
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	var want any
	_ = json.Unmarshal([]byte(in), &want)
	if got := asJSON(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %v\nwant %v", got, want)
	}
}
