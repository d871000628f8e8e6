package clientapi_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// hierarchyPage is an answer of /hierarchy.
type hierarchyPage struct {
	Rooms []struct {
		RoomID           string `json:"room_id"`
		Name             string `json:"name"`
		RoomType         string `json:"room_type"`
		JoinRule         string `json:"join_rule"`
		NumJoinedMembers int    `json:"num_joined_members"`
		WorldReadable    *bool  `json:"world_readable"`
		GuestCanJoin     *bool  `json:"guest_can_join"`
		RoomVersion      string `json:"room_version"`
		ChildrenState    []struct {
			Type           string          `json:"type"`
			StateKey       string          `json:"state_key"`
			Sender         string          `json:"sender"`
			Content        json.RawMessage `json:"content"`
			OriginServerTS int64           `json:"origin_server_ts"`
		} `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func (p hierarchyPage) ids() []string {
	var out []string
	for _, r := range p.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func hierarchyURL(s *testserver.Server, roomID id.RoomID, q url.Values) string {
	u := s.URL + "/_matrix/client/v1/rooms/" + url.PathEscape(string(roomID)) + "/hierarchy"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// getHierarchy asks for one page and expects 200.
func getHierarchy(t *testing.T, s *testserver.Server, c *mautrix.Client, roomID id.RoomID, q url.Values) hierarchyPage {
	t.Helper()
	r := do(t, "GET", hierarchyURL(s, roomID, q), c.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("hierarchy %s %v: %d %s", roomID, q, r.Status, r.Raw)
	}
	var p hierarchyPage
	if err := json.Unmarshal(r.Raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.Rooms == nil {
		t.Fatalf("rooms missing: %s", r.Raw)
	}
	return p
}

// walkHierarchy reads every page and returns the rooms in order and the
// number of pages.
func walkHierarchy(t *testing.T, s *testserver.Server, c *mautrix.Client, roomID id.RoomID, q url.Values) ([]string, int) {
	t.Helper()
	var all []string
	for pages := 1; ; pages++ {
		p := getHierarchy(t, s, c, roomID, q)
		all = append(all, p.ids()...)
		if p.NextBatch == "" {
			return all, pages
		}
		if pages > 20 {
			t.Fatal("pagination does not end")
		}
		q = cloneValues(q)
		q.Set("from", p.NextBatch)
	}
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}

func TestSpaceHierarchy(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")

	mk := func(req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		r, err := alice.CreateRoom(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	spaceType := map[string]any{"type": "m.space"}
	space := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", CreationContent: spaceType})
	nested := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Nested", CreationContent: spaceType})
	deep := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Deep"})
	open := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open"})
	private := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"})
	restricted := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Members", InitialState: []*event.Event{{
		Type: event.StateJoinRules, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space)}}}},
	}}})
	secret := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", CreationContent: spaceType})

	child := func(parent, c id.RoomID, content map[string]any) {
		t.Helper()
		if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, string(c), content); err != nil {
			t.Fatal(err)
		}
	}
	via := []string{"test.veche"}
	// Order keys make the walk's order certain: events sent within one
	// millisecond would otherwise be ordered by room ID.
	child(space, nested, map[string]any{"via": via, "order": "a"})
	child(space, open, map[string]any{"via": via, "order": "b", "suggested": true})
	child(space, private, map[string]any{"via": via, "order": "c"})
	child(space, restricted, map[string]any{"via": via, "order": "d"})
	child(space, "!gone:remote.example", map[string]any{"via": []string{"remote.example"}, "order": "e"})
	child(space, "!novia:test.veche", map[string]any{})
	child(nested, deep, map[string]any{"via": via, "suggested": true})
	child(nested, space, map[string]any{"via": via}) // a loop
	child(secret, open, map[string]any{"via": via})

	// Alice is in every room; the walk is depth-first, children in order,
	// the loop back to the space and the unreachable remote room left out.
	all := []string{string(space), string(nested), string(deep), string(open), string(private), string(restricted)}
	p := getHierarchy(t, s, alice, space, nil)
	if got := p.ids(); !slices.Equal(got, all) || p.NextBatch != "" {
		t.Fatalf("alice: %v (next %q), want %v", got, p.NextBatch, all)
	}
	root := p.Rooms[0]
	if root.Name != "Space" || root.RoomType != "m.space" || root.JoinRule != "public" || root.NumJoinedMembers != 1 ||
		root.WorldReadable == nil || root.GuestCanJoin == nil || root.RoomVersion == "" {
		t.Fatalf("root chunk: %+v", root)
	}
	var keys []string
	for _, c := range root.ChildrenState {
		keys = append(keys, c.StateKey)
		if c.Type != "m.space.child" || c.Sender != string(alice.UserID) || c.OriginServerTS == 0 || len(c.Content) == 0 {
			t.Fatalf("children_state entry: %+v", c)
		}
	}
	if want := []string{string(nested), string(open), string(private), string(restricted), "!gone:remote.example"}; !slices.Equal(keys, want) {
		t.Fatalf("children_state %v, want %v (in order, without the child that has no via)", keys, want)
	}
	for _, r := range p.Rooms[2:] {
		if len(r.ChildrenState) != 0 {
			t.Fatalf("a room that is no space has children_state %+v", r.ChildrenState)
		}
	}

	// Bob sees the open rooms only; the restricted one once he is in the
	// space it allows.
	visible := []string{string(space), string(nested), string(deep), string(open)}
	if got, _ := walkHierarchy(t, s, bob, space, nil); !slices.Equal(got, visible) {
		t.Fatalf("bob: %v, want %v", got, visible)
	}
	if _, err := bob.JoinRoomByID(ctx, space); err != nil {
		t.Fatal(err)
	}
	withRestricted := append(slices.Clone(visible), string(restricted))
	if got, _ := walkHierarchy(t, s, bob, space, nil); !slices.Equal(got, withRestricted) {
		t.Fatalf("bob in the space: %v, want %v", got, withRestricted)
	}

	// Pagination: pages of two give the same walk; a page asked twice
	// gives the same answer.
	got, pages := walkHierarchy(t, s, alice, space, url.Values{"limit": {"2"}})
	if !slices.Equal(got, all) || pages < 3 {
		t.Fatalf("pages of 2: %v in %d pages, want %v", got, pages, all)
	}
	first := getHierarchy(t, s, alice, space, url.Values{"limit": {"2"}})
	q := url.Values{"limit": {"2"}, "from": {first.NextBatch}}
	again1, again2 := getHierarchy(t, s, alice, space, q), getHierarchy(t, s, alice, space, q)
	if !slices.Equal(again1.ids(), again2.ids()) || !slices.Equal(again1.ids(), all[2:4]) {
		t.Fatalf("second page twice: %v and %v, want %v", again1.ids(), again2.ids(), all[2:4])
	}

	// max_depth and suggested_only.
	if got, _ := walkHierarchy(t, s, alice, space, url.Values{"max_depth": {"0"}}); !slices.Equal(got, []string{string(space)}) {
		t.Fatalf("max_depth 0: %v", got)
	}
	depth1 := []string{string(space), string(nested), string(open), string(private), string(restricted)}
	if got, _ := walkHierarchy(t, s, alice, space, url.Values{"max_depth": {"1"}}); !slices.Equal(got, depth1) {
		t.Fatalf("max_depth 1: %v, want %v", got, depth1)
	}
	sp := getHierarchy(t, s, alice, space, url.Values{"suggested_only": {"true"}})
	if got := sp.ids(); !slices.Equal(got, []string{string(space), string(open)}) || len(sp.Rooms[0].ChildrenState) != 1 {
		t.Fatalf("suggested only: %v, children_state %+v", got, sp.Rooms[0].ChildrenState)
	}

	// A space nobody invited bob to, and an unknown room: 403.
	expectError(t, do(t, "GET", hierarchyURL(s, secret, nil), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", hierarchyURL(s, "!unknown:test.veche", nil), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	if got, _ := walkHierarchy(t, s, alice, secret, nil); !slices.Equal(got, []string{string(secret), string(open)}) {
		t.Fatalf("alice's secret space: %v", got)
	}

	// Invalid parameters and tokens.
	for _, q := range []url.Values{
		{"limit": {"0"}}, {"limit": {"x"}}, {"max_depth": {"-1"}}, {"max_depth": {"x"}},
		{"suggested_only": {"yes"}}, {"from": {"bogus"}},
		{"from": {first.NextBatch}, "max_depth": {"3"}},
		{"from": {first.NextBatch}, "suggested_only": {"true"}},
	} {
		expectError(t, do(t, "GET", hierarchyURL(s, space, q), alice.AccessToken, nil), 400, "M_INVALID_PARAM")
	}
	// A token is its user's and its room's.
	expectError(t, do(t, "GET", hierarchyURL(s, space, url.Values{"from": {first.NextBatch}}), bob.AccessToken, nil), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "GET", hierarchyURL(s, nested, url.Values{"from": {first.NextBatch}}), alice.AccessToken, nil), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "GET", hierarchyURL(s, "not-a-room", nil), alice.AccessToken, nil), 400, "M_INVALID_PARAM")
}
