package pushrules

import (
	"encoding/json"
	"reflect"
	"testing"
)

func mustEvent(t *testing.T, raw string) *Event {
	t.Helper()
	ev, err := NewEvent([]byte(raw))
	if err != nil {
		t.Fatalf("event %s: %v", raw, err)
	}
	return ev
}

func mustCondition(t *testing.T, raw string) Condition {
	t.Helper()
	var c Condition
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatalf("condition %s: %v", raw, err)
	}
	return c
}

func TestSplitPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"content.body", []string{"content", "body"}},
		{"type", []string{"type"}},
		{`content.m\.relates_to.rel_type`, []string{"content", "m.relates_to", "rel_type"}},
		{`content.m\\foo`, []string{"content", `m\foo`}},
		{`content.m\\.foo`, []string{"content", `m\`, "foo"}},
		{`content.a\xb`, []string{"content", `a\xb`}},
		{`content.trailing\`, []string{"content", `trailing\`}},
		{"a..b", []string{"a", "", "b"}},
	}
	for _, tt := range tests {
		if got := splitPath(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestConditions(t *testing.T) {
	room := func(key string) bool { return key == "room" }
	ctx := EvalContext{UserID: me, DisplayName: "Alice", MemberCount: 2, SenderNotificationPermission: room}
	msg := func(body string) string {
		b, _ := json.Marshal(body)
		return `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!r:example.org","content":{"msgtype":"m.text","body":` + string(b) + `}}`
	}
	topic := func(topic string) string {
		return `{"type":"m.room.topic","state_key":"","content":{"topic":` + topic + `}}`
	}
	create := `{"type":"m.room.create","state_key":"","content":{"m.federate":true,"n":1,"f":1.5,"big":9007199254740993,"neg":-3,"nul":null,"obj":{},"s":"true",
		"m\\foo":"backslash","alt_aliases":["#somewhere:example.org","#myroom:example.com",1,true,null,{"x":1}]}}`
	tests := []struct {
		name, cond, event string
		ctx               *EvalContext
		want              bool
	}{
		// event_match, with the spec's examples.
		{"type exact", `{"kind":"event_match","key":"type","pattern":"m.room.message"}`, msg("hi"), nil, true},
		{"type other", `{"kind":"event_match","key":"type","pattern":"m.room.member"}`, msg("hi"), nil, false},
		{"case-insensitive", `{"kind":"event_match","key":"type","pattern":"M.ROOM.MESSAGE"}`, msg("hi"), nil, true},
		{"glob ?*", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"Lunch plans"`), nil, true},
		{"glob upper", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"LUNCH"`), nil, true},
		{"glob leading space", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`" lunch"`), nil, false},
		{"glob ? needs a char", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"lunc"`), nil, false},
		{"glob null", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`null`), nil, false},
		{"star on non-string", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topic(`5`), nil, false},
		{"star on absent", `{"kind":"event_match","key":"content.nothing","pattern":"*"}`, topic(`"x"`), nil, false},
		{"star matches empty", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topic(`""`), nil, true},
		{"whole value only", `{"kind":"event_match","key":"content.topic","pattern":"lunch"}`, topic(`"lunch plans"`), nil, false},
		{"regexp chars literal", `{"kind":"event_match","key":"content.topic","pattern":"a.c"}`, topic(`"abc"`), nil, false},
		{"star spans newlines", `{"kind":"event_match","key":"content.topic","pattern":"a*c"}`, topic(`"a\nb\nc"`), nil, true},
		{"empty pattern on state_key", `{"kind":"event_match","key":"state_key","pattern":""}`, topic(`"x"`), nil, true},
		{"unicode case", `{"kind":"event_match","key":"content.topic","pattern":"ÉTÉ*"}`, topic(`"été prochain"`), nil, true},
		{"body word", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, msg("An example event."), nil, true},
		{"body whole", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, msg("exple"), nil, true},
		{"body spanning words", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, msg("An exciting triple-whammy"), nil, true},
		{"body inside word", `{"kind":"event_match","key":"content.body","pattern":"example"}`, msg("counterexample"), nil, false},
		{"body underscore is a word char", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, msg("cake_lie"), nil, false},
		{"body punctuation", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, msg("Cake!"), nil, true},
		{"escaped dot key", `{"kind":"event_match","key":"content.m\\.relates_to.rel_type","pattern":"m.replace"}`,
			`{"type":"m.room.message","content":{"m.relates_to":{"rel_type":"m.replace"}}}`, nil, true},
		{"unescaped dot key", `{"kind":"event_match","key":"content.m.relates_to.rel_type","pattern":"m.replace"}`,
			`{"type":"m.room.message","content":{"m.relates_to":{"rel_type":"m.replace"}}}`, nil, false},
		{"escaped backslash key", `{"kind":"event_match","key":"content.m\\\\foo","pattern":"backslash"}`, create, nil, true},

		// event_property_is, with the spec's example.
		{"is true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, create, nil, true},
		{"is not the string", `{"kind":"event_property_is","key":"content.m\\.federate","value":"true"}`, create, nil, false},
		{"is not cast", `{"kind":"event_property_is","key":"content.m\\.federate","value":1}`, create, nil, false},
		{"is string not bool", `{"kind":"event_property_is","key":"content.s","value":true}`, create, nil, false},
		{"is integer", `{"kind":"event_property_is","key":"content.n","value":1}`, create, nil, true},
		{"is negative integer", `{"kind":"event_property_is","key":"content.neg","value":-3}`, create, nil, true},
		{"is float never", `{"kind":"event_property_is","key":"content.f","value":1}`, create, nil, false},
		{"is out of range never", `{"kind":"event_property_is","key":"content.big","value":9007199254740991}`, create, nil, false},
		{"is null", `{"kind":"event_property_is","key":"content.nul","value":null}`, create, nil, true},
		{"is null vs absent", `{"kind":"event_property_is","key":"content.absent","value":null}`, create, nil, false},
		{"is object never", `{"kind":"event_property_is","key":"content.obj","value":null}`, create, nil, false},
		{"is without value", `{"kind":"event_property_is","key":"content.nul"}`, create, nil, false},
		{"is case-sensitive", `{"kind":"event_property_is","key":"type","value":"M.ROOM.CREATE"}`, create, nil, false},

		// event_property_contains, with the spec's example.
		{"contains", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}`, create, nil, true},
		{"contains partial", `{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}`, create, nil, false},
		{"contains integer", `{"kind":"event_property_contains","key":"content.alt_aliases","value":1}`, create, nil, true},
		{"contains bool", `{"kind":"event_property_contains","key":"content.alt_aliases","value":true}`, create, nil, true},
		{"contains null", `{"kind":"event_property_contains","key":"content.alt_aliases","value":null}`, create, nil, true},
		{"contains not an array", `{"kind":"event_property_contains","key":"content.s","value":"true"}`, create, nil, false},
		{"contains absent", `{"kind":"event_property_contains","key":"content.absent","value":"x"}`, create, nil, false},

		// contains_display_name.
		{"display name", `{"kind":"contains_display_name"}`, msg("hey alice, lunch?"), nil, true},
		{"display name in a word", `{"kind":"contains_display_name"}`, msg("malice"), nil, false},
		{"no display name", `{"kind":"contains_display_name"}`, msg("hey alice"), &EvalContext{UserID: me}, false},
		{"display name is literal", `{"kind":"contains_display_name"}`, msg("hey alice"), &EvalContext{UserID: me, DisplayName: "a*"}, false},
		{"display name with stars", `{"kind":"contains_display_name"}`, msg("hey a*!"), &EvalContext{UserID: me, DisplayName: "a*"}, true},
		{"display name without body", `{"kind":"contains_display_name"}`, create, nil, false},

		// room_member_count (2 members).
		{"count bare", `{"kind":"room_member_count","is":"2"}`, msg("x"), nil, true},
		{"count ==", `{"kind":"room_member_count","is":"==2"}`, msg("x"), nil, true},
		{"count == other", `{"kind":"room_member_count","is":"==3"}`, msg("x"), nil, false},
		{"count <", `{"kind":"room_member_count","is":"<3"}`, msg("x"), nil, true},
		{"count < equal", `{"kind":"room_member_count","is":"<2"}`, msg("x"), nil, false},
		{"count >", `{"kind":"room_member_count","is":">1"}`, msg("x"), nil, true},
		{"count > equal", `{"kind":"room_member_count","is":">2"}`, msg("x"), nil, false},
		{"count <=", `{"kind":"room_member_count","is":"<=2"}`, msg("x"), nil, true},
		{"count >=", `{"kind":"room_member_count","is":">=3"}`, msg("x"), nil, false},
		{"count invalid", `{"kind":"room_member_count","is":"two"}`, msg("x"), nil, false},
		{"count missing", `{"kind":"room_member_count"}`, msg("x"), nil, false},
		{"count bad operator", `{"kind":"room_member_count","is":"=<2"}`, msg("x"), nil, false},

		// sender_notification_permission.
		{"permission", `{"kind":"sender_notification_permission","key":"room"}`, msg("x"), nil, true},
		{"permission other key", `{"kind":"sender_notification_permission","key":"other"}`, msg("x"), nil, false},
		{"permission without check", `{"kind":"sender_notification_permission","key":"room"}`, msg("x"), &EvalContext{UserID: me}, false},

		// Unknown conditions never match.
		{"unknown kind", `{"kind":"org.example.always"}`, msg("x"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCondition(t, tt.cond)
			cx := ctx
			if tt.ctx != nil {
				cx = *tt.ctx
			}
			if got := conditionMatches(&c, mustEvent(t, tt.event), cx); got != tt.want {
				t.Errorf("%s on %s = %v, want %v", tt.cond, tt.event, got, tt.want)
			}
		})
	}
}

// TestDefaultRules evaluates typical events against the default rules of
// @alice:example.org.
func TestDefaultRules(t *testing.T) {
	rules := ForUser(nil, me, "Alice")
	admin := func(key string) bool { return true }
	message := func(content string) string {
		return `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!r:example.org","content":` + content + `}`
	}
	tests := []struct {
		name      string
		event     string
		members   int
		perm      func(string) bool
		rule      string // "" for none
		notify    bool
		highlight bool
		sound     string
	}{
		{"group message", message(`{"msgtype":"m.text","body":"hello"}`), 5, nil, RuleMessage, true, false, ""},
		{"user mention", message(`{"msgtype":"m.text","body":"Alice: look","m.mentions":{"user_ids":["@alice:example.org"]}}`), 5, nil,
			RuleIsUserMention, true, true, "default"},
		{"mention of someone else", message(`{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":["@carol:example.org"]}}`), 5, nil,
			RuleMessage, true, false, ""},
		{"name in body is no mention", message(`{"msgtype":"m.text","body":"alice and @alice:example.org"}`), 5, nil,
			RuleMessage, true, false, ""},
		{"room mention by a moderator", message(`{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}`), 5, admin,
			RuleIsRoomMention, true, true, ""},
		{"room mention without permission", message(`{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}`), 5, nil,
			RuleMessage, true, false, ""},
		{"direct message", message(`{"msgtype":"m.text","body":"psst"}`), 2, nil, RuleRoomOneToOne, true, false, "default"},
		{"encrypted direct message", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`, 2, nil,
			RuleEncryptedRoomOneToOne, true, false, "default"},
		{"encrypted group message", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{}}`, 3, nil, RuleEncrypted, true, false, ""},
		{"notice", message(`{"msgtype":"m.notice","body":"bot says"}`), 2, nil, RuleSuppressNotices, false, false, ""},
		{"edit", message(`{"msgtype":"m.text","body":"* fixed","m.new_content":{"msgtype":"m.text","body":"fixed"},"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`), 2, nil,
			RuleSuppressEdits, false, false, ""},
		{"reaction", `{"type":"m.reaction","sender":"@bob:example.org","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"👍"}}}`, 2, nil,
			RuleReaction, false, false, ""},
		{"invite for me", `{"type":"m.room.member","sender":"@bob:example.org","state_key":"@alice:example.org","content":{"membership":"invite"}}`, 2, nil,
			RuleInviteForMe, true, false, "default"},
		{"invite for someone else", `{"type":"m.room.member","sender":"@bob:example.org","state_key":"@carol:example.org","content":{"membership":"invite"}}`, 2, nil,
			RuleMemberEvent, false, false, ""},
		{"join", `{"type":"m.room.member","sender":"@bob:example.org","state_key":"@bob:example.org","content":{"membership":"join"}}`, 2, nil,
			RuleMemberEvent, false, false, ""},
		{"tombstone", `{"type":"m.room.tombstone","sender":"@bob:example.org","state_key":"","content":{"replacement_room":"!new:example.org"}}`, 5, nil,
			RuleTombstone, true, true, ""},
		{"tombstone not state", `{"type":"m.room.tombstone","sender":"@bob:example.org","content":{}}`, 5, nil, "", false, false, ""},
		{"server ACL", `{"type":"m.room.server_acl","sender":"@bob:example.org","state_key":"","content":{"allow":["*"]}}`, 5, nil,
			RuleServerACL, false, false, ""},
		{"call", `{"type":"m.call.invite","sender":"@bob:example.org","content":{"call_id":"c"}}`, 2, nil, RuleCall, true, false, "ring"},
		{"topic", `{"type":"m.room.topic","sender":"@bob:example.org","state_key":"","content":{"topic":"x"}}`, 5, nil, "", false, false, ""},
		{"own message", `{"type":"m.room.message","sender":"@alice:example.org","content":{"msgtype":"m.text","body":"me","m.mentions":{"user_ids":["@alice:example.org"]}}}`, 2, nil,
			RuleIsUserMention, false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustEvent(t, tt.event)
			ctx := EvalContext{UserID: me, DisplayName: "Alice", MemberCount: tt.members, SenderNotificationPermission: tt.perm}
			r := Match(rules, ev, ctx)
			switch {
			case tt.rule == "" && r != nil:
				t.Errorf("matched %s, want no rule", r.RuleID)
			case tt.rule != "" && (r == nil || r.RuleID != tt.rule):
				t.Errorf("matched %v, want %s", r, tt.rule)
			}
			notify, highlight, sound := Evaluate(rules, ev, ctx)
			if notify != tt.notify || highlight != tt.highlight || sound != tt.sound {
				t.Errorf("Evaluate = %v, %v, %q; want %v, %v, %q", notify, highlight, sound, tt.notify, tt.highlight, tt.sound)
			}
		})
	}
}

// TestUserRules evaluates the user's own rules and changes.
func TestUserRules(t *testing.T) {
	var c Changes
	put := func(k Kind, id, body string) {
		t.Helper()
		var b RuleBody
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatal(err)
		}
		r, err := b.Rule(k, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Put(k, r, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	put(Content, "cake", `{"pattern":"cake*","actions":["notify",{"set_tweak":"sound","value":"cakealarm.wav"}]}`)
	put(Room, "!muted:example.org", `{"actions":[]}`)
	put(Sender, "@boss:example.org", `{"actions":["notify",{"set_tweak":"highlight","value":true}]}`)
	put(Override, "beer", `{"conditions":[{"kind":"event_match","key":"content.body","pattern":"beer"},{"kind":"room_member_count","is":"<=10"}],"actions":["notify",{"set_tweak":"sound","value":"beeroclock.wav"}]}`)
	put(Underride, "topics", `{"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.topic"}],"actions":["notify","dont_notify"]}`)
	if err := c.SetActions(Underride, RuleMessage, []Action{}); err != nil {
		t.Fatal(err)
	}
	rules := c.Apply(me)
	msg := func(room, sender, content string) string {
		return `{"type":"m.room.message","room_id":"` + room + `","sender":"` + sender + `","content":` + content + `}`
	}
	tests := []struct {
		name, event       string
		members           int
		rule              string
		notify, highlight bool
		sound             string
	}{
		{"content rule", msg("!r:example.org", "@bob:example.org", `{"body":"Cakes are a lie"}`), 5, "cake", true, false, "cakealarm.wav"},
		{"override beats content", msg("!r:example.org", "@bob:example.org", `{"body":"beer and cake"}`), 5, "beer", true, false, "beeroclock.wav"},
		{"override condition fails", msg("!r:example.org", "@bob:example.org", `{"body":"beer and cake"}`), 11, "cake", true, false, "cakealarm.wav"},
		{"muted room", msg("!muted:example.org", "@boss:example.org", `{"body":"hello"}`), 5, "!muted:example.org", false, false, ""},
		{"mention beats muted room", msg("!muted:example.org", "@bob:example.org", `{"body":"hi","m.mentions":{"user_ids":["@alice:example.org"]}}`), 5,
			RuleIsUserMention, true, true, "default"},
		{"sender rule", msg("!r:example.org", "@boss:example.org", `{"body":"hello"}`), 5, "@boss:example.org", true, true, ""},
		{"silenced default", msg("!r:example.org", "@bob:example.org", `{"body":"hello"}`), 5, RuleMessage, false, false, ""},
		{"underride with historical action", `{"type":"m.room.topic","state_key":"","sender":"@bob:example.org","content":{}}`, 5, "topics", true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustEvent(t, tt.event)
			ctx := EvalContext{UserID: me, MemberCount: tt.members}
			if r := Match(rules, ev, ctx); r == nil || r.RuleID != tt.rule {
				t.Errorf("matched %v, want %s", r, tt.rule)
			}
			notify, highlight, sound := Evaluate(rules, ev, ctx)
			if notify != tt.notify || highlight != tt.highlight || sound != tt.sound {
				t.Errorf("Evaluate = %v, %v, %q; want %v, %v, %q", notify, highlight, sound, tt.notify, tt.highlight, tt.sound)
			}
		})
	}

	// A disabled rule never matches; the master rule silences everything.
	if err := c.SetEnabled(Content, "cake", false); err != nil {
		t.Fatal(err)
	}
	ev := mustEvent(t, msg("!r:example.org", "@bob:example.org", `{"body":"cake"}`))
	if r := Match(c.Apply(me), ev, EvalContext{UserID: me, MemberCount: 5}); r == nil || r.RuleID != RuleMessage {
		t.Errorf("with cake disabled matched %v", r)
	}
	if err := c.SetEnabled(Override, RuleMaster, true); err != nil {
		t.Fatal(err)
	}
	mention := mustEvent(t, msg("!r:example.org", "@bob:example.org", `{"body":"hi","m.mentions":{"user_ids":["@alice:example.org"]}}`))
	if notify, _, _ := Evaluate(c.Apply(me), mention, EvalContext{UserID: me, MemberCount: 2}); notify {
		t.Error("master rule enabled, yet a mention notifies")
	}
}

func TestHighlightTweakValues(t *testing.T) {
	tests := []struct {
		tweak string
		want  bool
	}{
		{`{"set_tweak":"highlight"}`, true},
		{`{"set_tweak":"highlight","value":null}`, true},
		{`{"set_tweak":"highlight","value":true}`, true},
		{`{"set_tweak":"highlight","value":false}`, false},
		{`{"set_tweak":"highlight","value":"yes"}`, false},
	}
	for _, tt := range tests {
		rules := Ruleset{Global: Rules{Override: []Rule{{RuleID: "x", Enabled: true, Conditions: []Condition{},
			Actions: []Action{ActionNotify, Action(tt.tweak)}}}}}
		_, highlight, _ := Evaluate(rules, mustEvent(t, `{"type":"m.room.message","sender":"@bob:example.org","content":{}}`), EvalContext{UserID: me})
		if highlight != tt.want {
			t.Errorf("%s: highlight = %v, want %v", tt.tweak, highlight, tt.want)
		}
	}
}

// BenchmarkEvaluate is the cost per event and user that unread counts pay.
func BenchmarkEvaluate(b *testing.B) {
	rules := ForUser(nil, me, "")
	ev, err := NewEvent([]byte(`{"type":"m.room.message","sender":"@bob:example.org","room_id":"!r:example.org",
		"content":{"msgtype":"m.text","body":"hello there","m.mentions":{"user_ids":["@carol:example.org"]}}}`))
	if err != nil {
		b.Fatal(err)
	}
	ctx := EvalContext{UserID: me, MemberCount: 5}
	b.ReportAllocs()
	for b.Loop() {
		if notify, _, _ := Evaluate(rules, ev, ctx); !notify {
			b.Fatal("no notification")
		}
	}
}
