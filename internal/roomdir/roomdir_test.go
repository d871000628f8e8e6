package roomdir

import (
	"encoding/json"
	"net/url"
	"reflect"
	"testing"
)

// state builds a content getter from event type → content JSON.
func state(m map[string]string) func(string) map[string]json.RawMessage {
	return func(typ string) map[string]json.RawMessage {
		raw, ok := m[typ]
		if !ok {
			return nil
		}
		var c map[string]json.RawMessage
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			panic(err)
		}
		return c
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state map[string]string
		want  Details
		open  bool
	}{
		{"no state: invite-only, closed", nil, Details{Summary: Summary{RoomID: "!r", NumJoinedMembers: 3, JoinRule: "invite"}}, false},
		{"public with everything", map[string]string{
			"m.room.create":             `{"type":"m.space"}`,
			"m.room.name":               `{"name":"Hall"}`,
			"m.room.topic":              `{"topic":"plain","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>x</b>"},{"body":"rich plain"}]}}`,
			"m.room.avatar":             `{"url":"mxc://a/b"}`,
			"m.room.canonical_alias":    `{"alias":"#hall:a"}`,
			"m.room.join_rules":         `{"join_rule":"public"}`,
			"m.room.history_visibility": `{"history_visibility":"shared"}`,
			"m.room.guest_access":       `{"guest_access":"can_join"}`,
			"m.room.encryption":         `{"algorithm":"m.megolm.v1.aes-sha2"}`,
		}, Details{Summary: Summary{
			RoomID: "!r", NumJoinedMembers: 3, Name: "Hall", Topic: "rich plain", AvatarURL: "mxc://a/b", CanonicalAlias: "#hall:a",
			JoinRule: "public", GuestCanJoin: true, RoomType: "m.space",
		}, Encryption: "m.megolm.v1.aes-sha2"}, true},
		{"bad alias dropped, world readable", map[string]string{
			"m.room.canonical_alias":    `{"alias":"hall"}`,
			"m.room.history_visibility": `{"history_visibility":"world_readable"}`,
		}, Details{Summary: Summary{RoomID: "!r", NumJoinedMembers: 3, JoinRule: "invite", WorldReadable: true}}, true},
		{"restricted lists its rooms", map[string]string{
			"m.room.join_rules": `{"join_rule":"knock_restricted","allow":[{"type":"m.room_membership","room_id":"!space:a"},{"type":"other","room_id":"!x:a"},{"type":"m.room_membership","room_id":"nope"}]}`,
		}, Details{Summary: Summary{RoomID: "!r", NumJoinedMembers: 3, JoinRule: "knock_restricted"}, AllowedRoomIDs: []string{"!space:a"}}, true},
		{"non-string fields read as absent", map[string]string{
			"m.room.name":       `{"name":5}`,
			"m.room.join_rules": `{"join_rule":null}`,
		}, Details{Summary: Summary{RoomID: "!r", NumJoinedMembers: 3, JoinRule: "invite"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Describe("!r", 3, state(tc.state))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			if got.OpenToAll() != tc.open {
				t.Fatalf("OpenToAll = %v, want %v", got.OpenToAll(), tc.open)
			}
		})
	}
}

func TestFilterEntries(t *testing.T) {
	space := "m.space"
	entries := []entry{
		{chunk: Summary{RoomID: "!a", Name: "Harbour"}},
		{chunk: Summary{RoomID: "!b", Topic: "boats in the harbour", RoomType: "m.space"}},
		{chunk: Summary{RoomID: "!c", CanonicalAlias: "#market:x"}},
	}
	ids := func(es []entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.chunk.RoomID)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter *Filter
		want   []string
	}{
		{"none", nil, []string{"!a", "!b", "!c"}},
		{"term in name or topic", &Filter{GenericSearchTerm: " HARB "}, []string{"!a", "!b"}},
		{"term in alias", &Filter{GenericSearchTerm: "market"}, []string{"!c"}},
		{"spaces only", &Filter{RoomTypes: []*string{&space}}, []string{"!b"}},
		{"untyped only", &Filter{RoomTypes: []*string{nil}}, []string{"!a", "!c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]entry(nil), entries...)
			if got := ids(filterEntries(in, tc.filter)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	tok := token{Back: true, At: 42, Count: 7, RoomID: "!r:a"}
	got, err := parseToken(tok.String())
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{"%%", "e30", token{At: -1, RoomID: "!r"}.String()} {
		if _, err := parseToken(bad); err == nil {
			t.Fatalf("%q parsed", bad)
		}
	}
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"limit=5&since=abc&include_all_networks=true&third_party_instance_id=irc", true},
		{"", true},
		{"limit=five", false},
		{"include_all_networks=yes", false},
	} {
		q, _ := url.ParseQuery(tc.query)
		req, err := ParseQuery(q)
		if (err == nil) != tc.ok {
			t.Fatalf("%q: %v", tc.query, err)
		}
		if tc.query != "" && tc.ok && (req.Limit == nil || *req.Limit != 5 || req.Since != "abc" || !req.IncludeAllNetworks || req.ThirdPartyInstanceID != "irc") {
			t.Fatalf("%q: %+v", tc.query, req)
		}
	}
}
