package clientapi_test

import (
	"net/url"
	"reflect"
	"strconv"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/pushrules"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
)

var (
	notify       = []*pushrules.PushAction{{Action: pushrules.ActionNotify}}
	notifySound  = []*pushrules.PushAction{{Action: pushrules.ActionNotify}, {Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakSound, Value: "bing"}}
	defaultOrder = map[string][]string{
		"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
			".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		"content": {},
		"room":    {},
		"sender":  {},
		"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
			".m.rule.message", ".m.rule.encrypted"},
	}
)

// ruleIDs lists the rule IDs of each kind of a raw ruleset.
func ruleIDs(t *testing.T, ruleset any) map[string][]string {
	t.Helper()
	rs, ok := ruleset.(map[string]any)
	if !ok {
		t.Fatalf("ruleset is %T", ruleset)
	}
	out := map[string][]string{}
	for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
		list, ok := rs[kind].([]any)
		if !ok {
			t.Fatalf("ruleset has no %s array: %v", kind, rs)
		}
		out[kind] = []string{}
		for _, r := range list {
			out[kind] = append(out[kind], r.(map[string]any)["rule_id"].(string))
		}
	}
	return out
}

func rulesURL(s *testserver.Server, path string) string { return clientURL(s, "/pushrules/"+path) }

func TestPushRulesDefaults(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")

	r := do(t, "GET", rulesURL(s, ""), alice.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("GET /pushrules/ = %d %s", r.Status, r.Raw)
	}
	if got := ruleIDs(t, r.Body["global"]); !reflect.DeepEqual(got, defaultOrder) {
		t.Errorf("default rules = %v\nwant %v", got, defaultOrder)
	}
	global := do(t, "GET", rulesURL(s, "global/"), alice.AccessToken, nil)
	if global.Status != 200 || !reflect.DeepEqual(global.Body, r.Body["global"]) {
		t.Errorf("GET /pushrules/global/ = %d %s", global.Status, global.Raw)
	}
	legacy := do(t, "GET", s.URL+"/_matrix/client/r0/pushrules/", alice.AccessToken, nil)
	if legacy.Status != 200 || !reflect.DeepEqual(legacy.Body, r.Body) {
		t.Errorf("r0 GET /pushrules/ = %d %s", legacy.Status, legacy.Raw)
	}

	// The rules name the user where the spec says [the user's Matrix ID].
	mention, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.is_user_mention")
	if err != nil {
		t.Fatal(err)
	}
	if !mention.Default || !mention.Enabled || len(mention.Conditions) != 1 || mention.Conditions[0].Value != string(alice.UserID) ||
		mention.Conditions[0].Key != `content.m\.mentions.user_ids` || len(mention.Actions) != 3 {
		t.Errorf(".m.rule.is_user_mention = %+v", mention)
	}
	invite := do(t, "GET", rulesURL(s, "global/override/.m.rule.invite_for_me"), alice.AccessToken, nil)
	conds, _ := invite.Body["conditions"].([]any)
	if invite.Status != 200 || len(conds) != 3 || conds[2].(map[string]any)["pattern"] != string(alice.UserID) {
		t.Errorf(".m.rule.invite_for_me = %s", invite.Raw)
	}
	// The master rule shows its empty conditions; it is off by default.
	master := do(t, "GET", rulesURL(s, "global/override/.m.rule.master"), alice.AccessToken, nil)
	if c, ok := master.Body["conditions"].([]any); !ok || len(c) != 0 || master.Body["enabled"] != false || master.Body["default"] != true {
		t.Errorf(".m.rule.master = %s", master.Raw)
	}
	if e := do(t, "GET", rulesURL(s, "global/override/.m.rule.master/enabled"), alice.AccessToken, nil); e.Status != 200 || e.Body["enabled"] != false {
		t.Errorf("master enabled = %s", e.Raw)
	}
	if a := do(t, "GET", rulesURL(s, "global/underride/.m.rule.call/actions"), alice.AccessToken, nil); a.Status != 200 ||
		string(a.Raw) != `{"actions":["notify",{"set_tweak":"sound","value":"ring"}]}` {
		t.Errorf(".m.rule.call actions = %s", a.Raw)
	}

	// mautrix reads the whole ruleset.
	rs, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Override) != 10 || len(rs.Underride) != 5 || len(rs.Content) != 0 || len(rs.Room.Map) != 0 {
		t.Errorf("mautrix ruleset = %+v", rs)
	}

	expectError(t, do(t, "GET", rulesURL(s, ""), "", nil), 401, "M_MISSING_TOKEN")
}

func TestPushRulesCustom(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	pristine := do(t, "GET", rulesURL(s, ""), bob.AccessToken, nil)

	// Content rule, with the spec's example.
	if err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, "nocake", &mautrix.ReqPutPushRule{
		Pattern: "cake*lie", Actions: notifySound,
	}); err != nil {
		t.Fatal(err)
	}
	cake, err := alice.GetPushRule(ctx, "global", pushrules.ContentRule, "nocake")
	if err != nil || cake.Pattern != "cake*lie" || cake.Default || !cake.Enabled || len(cake.Actions) != 2 || cake.Conditions != nil {
		t.Fatalf("content rule = %+v, %v", cake, err)
	}

	// Override rules: new ones go first among the user's rules, before and
	// after place them, and the master rule stays above them all.
	put := func(id, before, after string) {
		t.Helper()
		if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, id, &mautrix.ReqPutPushRule{
			Before: before, After: after, Actions: notify,
			Conditions: []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "content.body", Pattern: id}},
		}); err != nil {
			t.Fatalf("PUT %s (before %q, after %q): %v", id, before, after, err)
		}
	}
	overrides := func() []string {
		t.Helper()
		r := do(t, "GET", rulesURL(s, "global/"), alice.AccessToken, nil)
		return ruleIDs(t, r.Body)["override"]
	}
	put("a", "", "")
	put("b", "", "")
	put("c", "", "a")
	put("d", "a", "")
	want := append([]string{".m.rule.master", "b", "d", "a", "c"}, defaultOrder["override"][1:]...)
	if got := overrides(); !reflect.DeepEqual(got, want) {
		t.Fatalf("override rules = %v\nwant %v", got, want)
	}
	put("a", "", "") // replacing keeps the place
	put("c", "b", "")
	want = append([]string{".m.rule.master", "c", "b", "d", "a"}, defaultOrder["override"][1:]...)
	if got := overrides(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after moving c: %v\nwant %v", got, want)
	}
	// An override without conditions matches everything: it is shown with
	// "conditions": [] (mautrix leaves empty conditions out).
	if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, "all", &mautrix.ReqPutPushRule{After: "a", Actions: notify}); err != nil {
		t.Fatal(err)
	}
	all := do(t, "GET", rulesURL(s, "global/override/all"), alice.AccessToken, nil)
	if c, ok := all.Body["conditions"].([]any); !ok || len(c) != 0 {
		t.Errorf("rule without conditions = %s", all.Raw)
	}

	// Room and sender rules, with IDs that need escaping.
	room := "!dj234r78wl45Gh4D:test.veche"
	if err := alice.PutPushRule(ctx, "global", pushrules.RoomRule, room, &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRule(ctx, "global", pushrules.SenderRule, "@spambot:test.veche", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}}); err != nil {
		t.Fatal(err)
	}
	rs, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Room.Map[room] == nil || rs.Sender.Map["@spambot:test.veche"] == nil || len(rs.Content) != 1 || len(rs.Override) != 15 {
		t.Errorf("ruleset = %+v", rs)
	}
	r := do(t, "GET", rulesURL(s, "global/room/"+url.PathEscape(room)), alice.AccessToken, nil)
	if r.Status != 200 || r.Body["rule_id"] != room || r.Body["conditions"] != nil || r.Body["pattern"] != nil {
		t.Errorf("room rule = %d %s", r.Status, r.Raw)
	}

	// Deleting.
	if err := alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "d"); err != nil {
		t.Fatal(err)
	}
	_, err = alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "d")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	err = alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "d")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	if err := alice.DeletePushRule(ctx, "global", pushrules.RoomRule, room); err != nil {
		t.Fatal(err)
	}
	want = append([]string{".m.rule.master", "c", "b", "a", "all"}, defaultOrder["override"][1:]...)
	if got := overrides(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after deleting: %v\nwant %v", got, want)
	}

	// Placement errors change nothing.
	expectError(t, do(t, "PUT", rulesURL(s, "global/override/e?before=nope"), alice.AccessToken, map[string]any{"actions": []any{}}), 400, "M_UNKNOWN")
	expectError(t, do(t, "PUT", rulesURL(s, "global/override/e?after=.m.rule.master"), alice.AccessToken, map[string]any{"actions": []any{}}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "PUT", rulesURL(s, "global/content/e?before=a"), alice.AccessToken, map[string]any{"actions": []any{}, "pattern": "x"}), 400, "M_UNKNOWN")
	if got := overrides(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after failed PUTs: %v\nwant %v", got, want)
	}

	// Bob's rules are his own.
	if r := do(t, "GET", rulesURL(s, ""), bob.AccessToken, nil); !reflect.DeepEqual(r.Body, pristine.Body) {
		t.Errorf("bob's rules changed: %s", r.Raw)
	}
	_, err = bob.GetPushRule(ctx, "global", pushrules.ContentRule, "nocake")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	err = bob.DeletePushRule(ctx, "global", pushrules.ContentRule, "nocake")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
}

func TestPushRulesEnabledAndActions(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")

	// Server-default rules can be disabled and given other actions.
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", false); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.call", notify); err != nil {
		t.Fatal(err)
	}
	msg, err := alice.GetPushRule(ctx, "global", pushrules.UnderrideRule, ".m.rule.message")
	if err != nil || msg.Enabled || !msg.Default || len(msg.Conditions) != 1 {
		t.Errorf(".m.rule.message = %+v, %v", msg, err)
	}
	if r := do(t, "GET", rulesURL(s, "global/override/.m.rule.master/enabled"), alice.AccessToken, nil); string(r.Raw) != `{"enabled":true}` {
		t.Errorf("master enabled = %s", r.Raw)
	}
	if r := do(t, "GET", rulesURL(s, "global/underride/.m.rule.call/actions"), alice.AccessToken, nil); string(r.Raw) != `{"actions":["notify"]}` {
		t.Errorf("call actions = %s", r.Raw)
	}
	// The rule keeps its place and its other fields.
	r := do(t, "GET", rulesURL(s, ""), alice.AccessToken, nil)
	if got := ruleIDs(t, r.Body["global"]); !reflect.DeepEqual(got, defaultOrder) {
		t.Errorf("rules after changes = %v", got)
	}
	// Back to the default.
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", false); err != nil {
		t.Fatal(err)
	}
	if r := do(t, "GET", rulesURL(s, "global/override/.m.rule.master/enabled"), alice.AccessToken, nil); string(r.Raw) != `{"enabled":false}` {
		t.Errorf("master enabled = %s", r.Raw)
	}
	// Bob's defaults are untouched.
	if r := do(t, "GET", rulesURL(s, "global/underride/.m.rule.message/enabled"), bob.AccessToken, nil); string(r.Raw) != `{"enabled":true}` {
		t.Errorf("bob's .m.rule.message enabled = %s", r.Raw)
	}

	// User-defined rules too; replacing a rule keeps it disabled.
	if err := alice.PutPushRule(ctx, "global", pushrules.SenderRule, "@bob:test.veche", &mautrix.ReqPutPushRule{Actions: notify}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.SenderRule, "@bob:test.veche", false); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRuleActions(ctx, "global", pushrules.SenderRule, "@bob:test.veche", notifySound); err != nil {
		t.Fatal(err)
	}
	if err := alice.PutPushRule(ctx, "global", pushrules.SenderRule, "@bob:test.veche", &mautrix.ReqPutPushRule{Actions: notifySound}); err != nil {
		t.Fatal(err)
	}
	sender, err := alice.GetPushRule(ctx, "global", pushrules.SenderRule, "@bob:test.veche")
	if err != nil || sender.Enabled || len(sender.Actions) != 2 || sender.Actions[1].Value != "bing" {
		t.Errorf("sender rule = %+v, %v", sender, err)
	}

	// Historical actions are dropped.
	if r := do(t, "PUT", rulesURL(s, "global/underride/.m.rule.encrypted/actions"), alice.AccessToken,
		map[string]any{"actions": []any{"dont_notify", "coalesce"}}); r.Status != 200 {
		t.Fatalf("historical actions = %d %s", r.Status, r.Raw)
	}
	if r := do(t, "GET", rulesURL(s, "global/underride/.m.rule.encrypted/actions"), alice.AccessToken, nil); string(r.Raw) != `{"actions":[]}` {
		t.Errorf("actions after dont_notify = %s", r.Raw)
	}

	// Unknown rules.
	err = alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, "nope", true)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	err = alice.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.master", notify) // wrong kind
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", rulesURL(s, "global/override/nope/enabled"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", rulesURL(s, "global/override/nope/actions"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", rulesURL(s, "global/sender/@bob:test.veche/enabled"), bob.AccessToken, nil), 404, "M_NOT_FOUND")
}

func TestPushRulesErrors(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.AllowGuests = true }))
	alice := registerUser(t, s, "alice")
	tok := alice.AccessToken
	actions := map[string]any{"actions": []any{"notify"}}
	tests := []struct {
		name, method, path string
		body               any
		status             int
		errcode            string
	}{
		{"unknown kind", "GET", "global/bogus/x", nil, 400, "M_INVALID_PARAM"},
		{"unknown kind PUT", "PUT", "global/bogus/x", actions, 400, "M_INVALID_PARAM"},
		{"unknown kind enabled", "PUT", "global/bogus/x/enabled", map[string]any{"enabled": true}, 400, "M_INVALID_PARAM"},
		{"unknown rule", "GET", "global/override/nope", nil, 404, "M_NOT_FOUND"},
		{"unknown scope", "GET", "device/override/x", nil, 404, "M_UNRECOGNIZED"},
		{"reserved ID", "PUT", "global/override/.m.rule.master", actions, 400, "M_INVALID_PARAM"},
		{"reserved ID of no default", "PUT", "global/underride/.mine", actions, 400, "M_INVALID_PARAM"},
		{"slash in ID", "PUT", "global/override/a%2Fb", actions, 400, "M_INVALID_PARAM"},
		{"backslash in ID", "PUT", "global/override/a%5Cb", actions, 400, "M_INVALID_PARAM"},
		{"room rule for a non-room", "PUT", "global/room/not-a-room", actions, 400, "M_INVALID_PARAM"},
		{"sender rule for a non-user", "PUT", "global/sender/bob", actions, 400, "M_INVALID_PARAM"},
		{"delete a default rule", "DELETE", "global/override/.m.rule.suppress_notices", nil, 400, "M_INVALID_PARAM"},
		{"not JSON", "PUT", "global/override/x", "actions", 400, "M_NOT_JSON"},
		{"not an object", "PUT", "global/override/x", `["notify"]`, 400, "M_NOT_JSON"},
		{"no actions", "PUT", "global/override/x", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"actions not an array", "PUT", "global/override/x", map[string]any{"actions": "notify"}, 400, "M_BAD_JSON"},
		{"unknown action", "PUT", "global/override/x", map[string]any{"actions": []any{"shout"}}, 400, "M_BAD_JSON"},
		{"tweak without name", "PUT", "global/override/x", map[string]any{"actions": []any{map[string]any{"value": 1}}}, 400, "M_BAD_JSON"},
		{"content without pattern", "PUT", "global/content/x", actions, 400, "M_MISSING_PARAM"},
		{"content with empty pattern", "PUT", "global/content/x", map[string]any{"actions": []any{}, "pattern": ""}, 400, "M_BAD_JSON"},
		{"conditions not an array", "PUT", "global/override/x", map[string]any{"actions": []any{}, "conditions": "all"}, 400, "M_BAD_JSON"},
		{"condition without kind", "PUT", "global/override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "type"}}}, 400, "M_BAD_JSON"},
		{"event_match without pattern", "PUT", "global/override/x",
			map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}}, 400, "M_BAD_JSON"},
		{"compound value", "PUT", "global/underride/x",
			map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_property_is", "key": "type", "value": []any{1}}}}, 400, "M_BAD_JSON"},
		{"bad member count", "PUT", "global/underride/x",
			map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "=<2"}}}, 400, "M_BAD_JSON"},
		{"enabled missing", "PUT", "global/override/.m.rule.master/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"enabled not a bool", "PUT", "global/override/.m.rule.master/enabled", map[string]any{"enabled": "yes"}, 400, "M_BAD_JSON"},
		{"enabled not JSON", "PUT", "global/override/.m.rule.master/enabled", "true", 400, "M_NOT_JSON"},
		{"actions missing", "PUT", "global/override/.m.rule.master/actions", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"actions invalid", "PUT", "global/override/.m.rule.master/actions", map[string]any{"actions": []any{5}}, 400, "M_BAD_JSON"},
		{"wrong method", "POST", "global/override/x", actions, 405, "M_UNRECOGNIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectError(t, do(t, tt.method, rulesURL(s, tt.path), tok, tt.body), tt.status, tt.errcode)
		})
	}
	// Nothing above was stored.
	r := do(t, "GET", rulesURL(s, ""), tok, nil)
	if got := ruleIDs(t, r.Body["global"]); !reflect.DeepEqual(got, defaultOrder) {
		t.Errorf("rules after errors = %v", got)
	}

	// m.push_rules is still not writable through the account data API.
	expectError(t, do(t, "PUT", clientURL(s, "/user/@alice:test.veche/account_data/m.push_rules"), tok, r.Body), 405, "M_BAD_JSON")

	// Guests have no push rules.
	guest := newClient(t, s)
	reg, _, err := guest.RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, do(t, "GET", rulesURL(s, ""), reg.AccessToken, nil), 403, "M_GUEST_ACCESS_FORBIDDEN")
}

// TestPushRulesReachSync checks that a change reaches the user's devices
// through /sync, as the m.push_rules account data event.
func TestPushRulesReachSync(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	sync := func(c *mautrix.Client, since string) response {
		t.Helper()
		q := "/sync?timeout=0"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		r := do(t, "GET", clientURL(s, q), c.AccessToken, nil)
		if r.Status != 200 {
			t.Fatalf("sync = %d %s", r.Status, r.Raw)
		}
		return r
	}
	pushRulesEvent := func(r response) map[string]any {
		t.Helper()
		ad, _ := r.Body["account_data"].(map[string]any)
		events, _ := ad["events"].([]any)
		for _, e := range events {
			if ev := e.(map[string]any); ev["type"] == "m.push_rules" {
				return ev["content"].(map[string]any)
			}
		}
		return nil
	}
	aliceSince := sync(alice, "").Body["next_batch"].(string)
	bobSince := sync(bob, "").Body["next_batch"].(string)

	if err := alice.PutPushRule(ctx, "global", pushrules.ContentRule, "lunch", &mautrix.ReqPutPushRule{Pattern: "lunch", Actions: notify}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.suppress_notices", false); err != nil {
		t.Fatal(err)
	}
	content := pushRulesEvent(sync(alice, aliceSince))
	if content == nil {
		t.Fatal("no m.push_rules in alice's sync after a change")
	}
	ids := ruleIDs(t, content["global"])
	if !reflect.DeepEqual(ids["content"], []string{"lunch"}) || !reflect.DeepEqual(ids["override"], defaultOrder["override"]) ||
		!reflect.DeepEqual(ids["underride"], defaultOrder["underride"]) {
		t.Errorf("synced rules = %v", ids)
	}
	notices := content["global"].(map[string]any)["override"].([]any)[1].(map[string]any)
	if notices["rule_id"] != ".m.rule.suppress_notices" || notices["enabled"] != false {
		t.Errorf("synced .m.rule.suppress_notices = %v", notices)
	}
	if r := sync(bob, bobSince); pushRulesEvent(r) != nil {
		t.Errorf("bob's sync has alice's push rules: since %s: %s", bobSince, r.Raw)
	}

	// What the account data API shows is a valid ruleset too.
	r := do(t, "GET", clientURL(s, "/user/@alice:test.veche/account_data/m.push_rules"), alice.AccessToken, nil)
	if r.Status != 200 || !reflect.DeepEqual(ruleIDs(t, r.Body["global"]), ids) {
		t.Errorf("account data m.push_rules = %d %s", r.Status, r.Raw)
	}
}

// TestPushRulesConcurrentChanges: each change rewrites the whole stored
// set, so changes made at the same time must not overwrite one another.
func TestPushRulesConcurrentChanges(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- alice.PutPushRule(ctx, "global", pushrules.ContentRule, "word"+strconv.Itoa(i),
				&mautrix.ReqPutPushRule{Pattern: "word" + strconv.Itoa(i), Actions: notify})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rs, err := alice.GetPushRules(ctx)
	if err != nil || len(rs.Content) != n {
		t.Fatalf("content rules after concurrent PUTs = %d, %v", len(rs.Content), err)
	}
}
