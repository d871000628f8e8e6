package federation_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// signedJSON makes an X-Matrix signed request from one test server to
// another, as that server would, and decodes the answer into out.
func signedJSON(t *testing.T, from *testserver.Server, dest spec.ServerName, method, path string, body, out any) error {
	t.Helper()
	key, err := signingkey.Load(from.Config.Path(from.Config.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	origin := spec.ServerName(from.Config.ServerName)
	req := fclient.NewFederationRequest(method, origin, dest, path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := req.Sign(origin, key.ID, key.PrivateKey); err != nil {
		t.Fatal(err)
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return from.Federation().Client().DoRequestAndParseResponse(bg, hr, out)
}

// clientErr extracts the status and errcode of a client API error.
func clientErr(t *testing.T, err error) (int, string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("error %v (%T) is not an HTTP error", err, err)
	}
	code := 0
	if he.Response != nil {
		code = he.Response.StatusCode
	}
	if he.RespError == nil {
		return code, ""
	}
	return code, he.RespError.ErrCode
}

func joinRulesState(rule string) *event.Event {
	return &event.Event{Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{"join_rule": rule}}}
}

func memberOf(t *testing.T, c *mautrix.Client, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	var content struct {
		Membership string `json:"membership"`
	}
	if err := c.StateEvent(bg, roomID, event.StateMember, string(userID), &content); err != nil {
		t.Fatalf("%s reading %s's membership: %v", c.UserID, userID, err)
	}
	return content.Membership
}

func TestKnockOverFederation(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	carol := user(t, b, "carol")

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Knock knock", InitialState: []*event.Event{joinRulesState("knock")},
	})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID

	// Bob knocks through a.test: the knock is in a.test's room state, and
	// bob's sync shows it with the room's stripped state.
	if _, err := bob.KnockRoom(bg, string(roomID), &mautrix.ReqKnockRoom{Via: []string{"a.test"}, Reason: "let me in"}); err != nil {
		t.Fatalf("bob knocks over federation: %v", err)
	}
	if m := memberOf(t, alice, roomID, bob.UserID); m != "knock" {
		t.Fatalf("a.test sees bob's membership %q, want knock", m)
	}
	resp, err := bob.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	kr, ok := resp.Rooms.Knock[roomID]
	if !ok {
		t.Fatalf("bob's sync has no knock section for the room: %+v", resp.Rooms)
	}
	var sawName, sawCreate, sawKnock bool
	for _, e := range kr.State.Events {
		switch {
		case e.Type == event.StateRoomName:
			sawName = e.Content.Raw["name"] == "Knock knock"
		case e.Type == event.StateCreate:
			sawCreate = true
		case e.Type == event.StateMember && e.StateKey != nil && *e.StateKey == string(bob.UserID):
			sawKnock = e.Content.Raw["membership"] == "knock"
		}
	}
	if !sawName || !sawCreate || !sawKnock {
		t.Fatalf("knock_state: name %v, create %v, own knock %v: %+v", sawName, sawCreate, sawKnock, kr.State.Events)
	}

	// Carol knocks and withdraws the knock: a leave out of band.
	if _, err := carol.KnockRoom(bg, string(roomID), &mautrix.ReqKnockRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("carol knocks: %v", err)
	}
	if _, err := carol.LeaveRoom(bg, roomID); err != nil {
		t.Fatalf("carol withdraws her knock: %v", err)
	}
	if m := memberOf(t, alice, roomID, carol.UserID); m != "leave" {
		t.Fatalf("a.test sees carol's membership %q, want leave", m)
	}
}

func TestKnockRefusals(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")

	public, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	v6, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "6"})
	if err != nil {
		t.Fatal(err)
	}
	knockable, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{joinRulesState("knock")}})
	if err != nil {
		t.Fatal(err)
	}

	// A room whose join rule is not knock refuses, and the client hears it.
	_, err = bob.KnockRoom(bg, string(public.RoomID), &mautrix.ReqKnockRoom{Via: []string{"a.test"}})
	if code, errcode := clientErr(t, err); code != http.StatusForbidden || errcode != "M_FORBIDDEN" {
		t.Fatalf("knocking on a public room: %d %s, want 403 M_FORBIDDEN", code, errcode)
	}

	makeKnock := func(roomID id.RoomID, userID string, vers ...string) error {
		q := url.Values{"ver": vers}
		path := "/_matrix/federation/v1/make_knock/" + url.PathEscape(string(roomID)) + "/" + url.PathEscape(userID)
		if len(vers) > 0 {
			path += "?" + q.Encode()
		}
		var out json.RawMessage
		return signedJSON(t, b, "a.test", "GET", path, nil, &out)
	}
	for _, tc := range []struct {
		name        string
		roomID      id.RoomID
		userID      string
		vers        []string
		wantStatus  int
		wantErrcode string
	}{
		{"ok", knockable.RoomID, "@bob:b.test", []string{"11", "12"}, 200, ""},
		{"no ver", knockable.RoomID, "@bob:b.test", nil, 400, "M_MISSING_PARAM"},
		{"incompatible version", knockable.RoomID, "@bob:b.test", []string{"1", "11"}, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"version without knocking", v6.RoomID, "@bob:b.test", []string{"6"}, 403, "M_FORBIDDEN"},
		{"user of another server", knockable.RoomID, "@bob:c.test", []string{"12"}, 403, "M_FORBIDDEN"},
		{"unknown room", "!nowhere:a.test", "@bob:b.test", []string{"12"}, 404, "M_NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := makeKnock(tc.roomID, tc.userID, tc.vers...)
			if tc.wantStatus == 200 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if code, errcode := httpErr(t, err); code != tc.wantStatus || errcode != tc.wantErrcode {
				t.Fatalf("got %d %s, want %d %s", code, errcode, tc.wantStatus, tc.wantErrcode)
			}
		})
	}
}

func TestPublicRoomsOverFederation(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	for _, name := range []string{"Town square", "Harbour"} {
		if _, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Unlisted"}); err != nil {
		t.Fatal(err)
	}

	names := func(chunk []*mautrix.PublicRoomInfo) []string {
		var out []string
		for _, r := range chunk {
			out = append(out, r.Name)
		}
		slices.Sort(out)
		return out
	}
	all, err := bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Server: "a.test"})
	if err != nil {
		t.Fatalf("bob lists a.test's directory: %v", err)
	}
	if got := names(all.Chunk); !slices.Equal(got, []string{"Harbour", "Town square"}) {
		t.Fatalf("a.test's directory as b.test sees it: %v", got)
	}

	// Pagination tokens are a.test's and pass through b.test untouched.
	first, err := bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Server: "a.test", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Chunk) != 1 || first.NextBatch == "" {
		t.Fatalf("first page: %+v", first)
	}
	second, err := bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Server: "a.test", Limit: 1, Since: first.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Chunk) != 1 || second.Chunk[0].RoomID == first.Chunk[0].RoomID || second.PrevBatch == "" {
		t.Fatalf("second page: %+v after %+v", second, first)
	}

	// A filter goes by POST.
	var filtered mautrix.RespPublicRooms
	u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, map[string]string{"server": "a.test"})
	if _, err := bob.MakeRequest(bg, "POST", u, map[string]any{"filter": map[string]any{"generic_search_term": "harb"}}, &filtered); err != nil {
		t.Fatalf("filtered listing: %v", err)
	}
	if got := names(filtered.Chunk); !slices.Equal(got, []string{"Harbour"}) {
		t.Fatalf("filtered listing: %v", got)
	}

	// The server side answers signed requests directly too.
	var direct fclient.RespPublicRooms
	if err := signedJSON(t, b, "a.test", "GET", "/_matrix/federation/v1/publicRooms?limit=5", nil, &direct); err != nil {
		t.Fatal(err)
	}
	if len(direct.Chunk) != 2 || direct.Chunk[0].JoinedMembersCount != 1 {
		t.Fatalf("GET publicRooms: %+v", direct)
	}
	_, err = bob.PublicRooms(bg, &mautrix.ReqPublicRooms{Server: "nowhere.test"})
	if code, _ := clientErr(t, err); code != http.StatusBadGateway {
		t.Fatalf("an unreachable server: %d, want 502", code)
	}
}

type hierarchyResp struct {
	Room struct {
		RoomID        string            `json:"room_id"`
		RoomType      string            `json:"room_type"`
		JoinRule      string            `json:"join_rule"`
		Name          string            `json:"name"`
		RoomVersion   string            `json:"room_version"`
		ChildrenState []json.RawMessage `json:"children_state"`
	} `json:"room"`
	Children []struct {
		RoomID         string   `json:"room_id"`
		Name           string   `json:"name"`
		JoinRule       string   `json:"join_rule"`
		AllowedRoomIDs []string `json:"allowed_room_ids"`
	} `json:"children"`
	InaccessibleChildren []string `json:"inaccessible_children"`
}

func TestSpaceHierarchyOverFederation(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	user(t, b, "bob")

	mk := func(req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		r, err := alice.CreateRoom(bg, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	space := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space", CreationContent: map[string]any{"type": "m.space"}})
	open := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Open"})
	closed := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed"})
	restricted := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Members only", InitialState: []*event.Event{{
		Type: event.StateJoinRules, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space)}}}},
	}}})
	member := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Was open"})
	secretSpace := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", CreationContent: map[string]any{"type": "m.space"}})
	plain := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Not a space"})
	child := func(parent, c id.RoomID, content map[string]any) {
		t.Helper()
		if _, err := alice.SendStateEvent(bg, parent, event.StateSpaceChild, string(c), content); err != nil {
			t.Fatal(err)
		}
	}
	via := []string{"a.test"}
	child(space, open, map[string]any{"via": via, "suggested": true})
	child(space, closed, map[string]any{"via": via})
	child(space, restricted, map[string]any{"via": via})
	child(space, member, map[string]any{"via": via})
	child(space, "!unknown:a.test", map[string]any{"via": via})
	child(space, "!novia:a.test", map[string]any{})

	get := func(roomID id.RoomID, suggestedOnly bool) (hierarchyResp, error) {
		path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(string(roomID))
		if suggestedOnly {
			path += "?suggested_only=true"
		}
		var out hierarchyResp
		err := signedJSON(t, b, "a.test", "GET", path, nil, &out)
		return out, err
	}
	h, err := get(space, false)
	if err != nil {
		t.Fatal(err)
	}
	if h.Room.RoomID != string(space) || h.Room.RoomType != "m.space" || h.Room.Name != "Space" || h.Room.RoomVersion == "" {
		t.Fatalf("room: %+v", h.Room)
	}
	if len(h.Room.ChildrenState) != 5 {
		t.Fatalf("children_state has %d entries, want 5 (the one without via is no child): %s", len(h.Room.ChildrenState), h.Room.ChildrenState)
	}
	var childIDs []string
	for _, c := range h.Children {
		childIDs = append(childIDs, c.RoomID)
	}
	slices.Sort(childIDs)
	if want := slices.Sorted(slices.Values([]string{string(open), string(member)})); !slices.Equal(childIDs, want) {
		t.Fatalf("children %v, want %v", childIDs, want)
	}
	// b.test has nobody in the space, so the restricted room is closed to
	// it too; the unknown room is left out entirely.
	inacc := slices.Sorted(slices.Values(h.InaccessibleChildren))
	if want := slices.Sorted(slices.Values([]string{string(closed), string(restricted)})); !slices.Equal(inacc, want) {
		t.Fatalf("inaccessible_children %v, want %v", inacc, want)
	}

	suggested, err := get(space, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(suggested.Room.ChildrenState) != 1 || len(suggested.Children) != 1 || suggested.Children[0].RoomID != string(open) {
		t.Fatalf("suggested only: %+v", suggested)
	}

	// Once a user of b.test is in the space, the restricted room opens to
	// b.test; so does an invite-only room b.test's user is in.
	bob := user(t, b, "bob2")
	for _, roomID := range []id.RoomID{space, member} {
		if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: via}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.SendStateEvent(bg, member, event.StateJoinRules, "", map[string]any{"join_rule": "invite"}); err != nil {
		t.Fatal(err)
	}
	h, err = get(space, false)
	if err != nil {
		t.Fatal(err)
	}
	childIDs = nil
	for _, c := range h.Children {
		childIDs = append(childIDs, c.RoomID)
		if c.RoomID == string(restricted) && (c.JoinRule != "restricted" || !slices.Equal(c.AllowedRoomIDs, []string{string(space)})) {
			t.Fatalf("restricted child: %+v", c)
		}
	}
	slices.Sort(childIDs)
	if want := slices.Sorted(slices.Values([]string{string(open), string(restricted), string(member)})); !slices.Equal(childIDs, want) {
		t.Fatalf("children once b.test is in: %v, want %v", childIDs, want)
	}
	if !slices.Equal(h.InaccessibleChildren, []string{string(closed)}) {
		t.Fatalf("inaccessible_children once b.test is in: %v", h.InaccessibleChildren)
	}

	p, err := get(plain, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Room.ChildrenState) != 0 || len(p.Children) != 0 {
		t.Fatalf("a room that is no space: %+v", p)
	}
	for _, roomID := range []id.RoomID{secretSpace, "!unknown:a.test"} {
		_, err := get(roomID, false)
		if code, errcode := httpErr(t, err); code != 404 || errcode != "M_NOT_FOUND" {
			t.Fatalf("%s: %d %s, want 404 M_NOT_FOUND", roomID, code, errcode)
		}
	}
}

func TestUserDevicesAndKeys(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	bob := user(t, b, "bob")
	who, err := bob.Whoami(bg)
	if err != nil {
		t.Fatal(err)
	}

	var devices struct {
		UserID   string `json:"user_id"`
		StreamID *int64 `json:"stream_id"`
		Devices  []struct {
			DeviceID string `json:"device_id"`
		} `json:"devices"`
	}
	if err := signedJSON(t, a, "b.test", "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(bob.UserID)), nil, &devices); err != nil {
		t.Fatal(err)
	}
	if devices.UserID != string(bob.UserID) || devices.StreamID == nil || len(devices.Devices) != 1 || devices.Devices[0].DeviceID != string(who.DeviceID) {
		t.Fatalf("devices: %+v", devices)
	}
	err = signedJSON(t, a, "b.test", "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape("@alice:a.test"), nil, &devices)
	if code, errcode := httpErr(t, err); code != 400 || errcode != "M_INVALID_PARAM" {
		t.Fatalf("devices of a user of another server: %d %s", code, errcode)
	}

	var query map[string]map[string]json.RawMessage
	if err := signedJSON(t, a, "b.test", "POST", "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": map[string][]string{string(bob.UserID): {}, "@x:a.test": {}}}, &query); err != nil {
		t.Fatal(err)
	}
	if got := string(query["device_keys"][string(bob.UserID)]); got != "{}" || len(query["device_keys"]) != 1 {
		t.Fatalf("keys/query: %v", query)
	}
	var claim map[string]json.RawMessage
	if err := signedJSON(t, a, "b.test", "POST", "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": map[string]any{string(bob.UserID): map[string]string{string(who.DeviceID): "signed_curve25519"}}}, &claim); err != nil {
		t.Fatal(err)
	}
	if string(claim["one_time_keys"]) != "{}" {
		t.Fatalf("keys/claim: %s", claim)
	}
	err = signedJSON(t, a, "b.test", "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{}, &query)
	if code, errcode := httpErr(t, err); code != 400 || errcode != "M_BAD_JSON" {
		t.Fatalf("keys/query without device_keys: %d %s", code, errcode)
	}
}

func TestOpenIDUserInfo(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	bob := user(t, b, "bob")

	tok, err := bob.RequestOpenIDToken(bg)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.MatrixServerName != "b.test" || tok.ExpiresIn != 3600 || tok.AccessToken == "" {
		t.Fatalf("token: %+v", tok)
	}
	// The userinfo endpoint is public: a third party calls it unsigned.
	userinfo := func(token string) (map[string]string, error) {
		req, _ := http.NewRequest("GET", "matrix://b.test/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), nil)
		var out map[string]string
		err := a.Federation().Client().DoRequestAndParseResponse(bg, req, &out)
		return out, err
	}
	info, err := userinfo(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if info["sub"] != string(bob.UserID) {
		t.Fatalf("userinfo: %v", info)
	}
	for _, bad := range []string{"nonsense", bob.AccessToken} {
		_, err := userinfo(bad)
		if code, errcode := httpErr(t, err); code != 401 || errcode != "M_UNKNOWN_TOKEN" {
			t.Fatalf("userinfo with %q: %d %s, want 401 M_UNKNOWN_TOKEN", bad, code, errcode)
		}
	}

	// Tokens are for oneself only.
	u := bob.BuildClientURL("v3", "user", "@carol:b.test", "openid", "request_token")
	_, err = bob.MakeRequest(bg, "POST", u, map[string]any{}, nil)
	if code, errcode := clientErr(t, err); code != 403 || errcode != "M_FORBIDDEN" {
		t.Fatalf("token for another user: %d %s", code, errcode)
	}
}

func TestRemoteProfileAndAlias(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	if err := bob.SetDisplayName(bg, "Bob the Builder"); err != nil {
		t.Fatal(err)
	}

	p, err := alice.GetProfile(bg, bob.UserID)
	if err != nil {
		t.Fatalf("alice reads bob's profile: %v", err)
	}
	if p.DisplayName != "Bob the Builder" {
		t.Fatalf("bob's profile from a.test: %+v", p)
	}
	_, err = alice.GetProfile(bg, "@nobody:b.test")
	if code, errcode := clientErr(t, err); code != 404 || errcode != "M_NOT_FOUND" {
		t.Fatalf("profile of an unknown remote user: %d %s", code, errcode)
	}

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "town"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := bob.ResolveAlias(bg, "#town:a.test")
	if err != nil {
		t.Fatalf("bob resolves a.test's alias: %v", err)
	}
	if res.RoomID != created.RoomID || !slices.Contains(res.Servers, "a.test") {
		t.Fatalf("alias resolved to %+v", res)
	}
	_, err = bob.ResolveAlias(bg, "#nothere:a.test")
	if code, errcode := clientErr(t, err); code != 404 || errcode != "M_NOT_FOUND" {
		t.Fatalf("unknown remote alias: %d %s", code, errcode)
	}
}
