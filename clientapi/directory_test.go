package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/testserver"
)

// createRoomRaw creates a room with a raw /createRoom body (mautrix's
// initial_state type carries fields the test does not want).
func createRoomRaw(t *testing.T, s *testserver.Server, cli *mautrix.Client, body map[string]any) id.RoomID {
	t.Helper()
	res := do(t, "POST", clientURL(s, "/createRoom"), cli.AccessToken, body)
	if res.Status != 200 {
		t.Fatalf("createRoom: %d %s", res.Status, res.Raw)
	}
	return id.RoomID(res.Body["room_id"].(string))
}

// adminToken creates a server admin account and returns its access token.
func adminToken(t *testing.T, s *testserver.Server, localpart string) string {
	t.Helper()
	sess, err := s.Accounts().Create(ctx, accounts.NewAccount{Localpart: localpart, Password: testPassword, Admin: true}, &accounts.LoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sess.AccessToken
}

func aliasPath(alias string) string { return "/directory/room/" + url.PathEscape(alias) }

func join(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	if _, err := cli.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("%s joining %s: %v", cli.UserID, room, err)
	}
}

func leave(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	if _, err := cli.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("%s leaving %s: %v", cli.UserID, room, err)
	}
}

func TestRoomAliases(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	admin := adminToken(t, s, "ops")
	room := createRoomRaw(t, s, alice, map[string]any{"preset": "public_chat", "name": "Lobby"})
	join(t, bob, room)

	lobby := id.RoomAlias("#lobby:test.veche")
	if _, err := alice.CreateAlias(ctx, lobby, room); err != nil {
		t.Fatal(err)
	}
	// Resolving needs no access token.
	resolved, err := newClient(t, s).ResolveAlias(ctx, lobby)
	if err != nil {
		t.Fatal(err)
	}
	if resolved.RoomID != room || !slices.Equal(resolved.Servers, []string{"test.veche"}) {
		t.Fatalf("resolved = %+v", resolved)
	}
	// Spec: a taken alias answers 409 M_UNKNOWN, even for the same room.
	_, err = bob.CreateAlias(ctx, lobby, room)
	expectMatrixError(t, err, 409, "M_UNKNOWN")
	// Any member may add an alias (Synapse: require_membership_for_aliases).
	bobs := id.RoomAlias("#bobs:test.veche")
	if _, err := bob.CreateAlias(ctx, bobs, room); err != nil {
		t.Fatal(err)
	}
	list, err := alice.GetAliases(ctx, room)
	if err != nil || !slices.Equal(list.Aliases, []id.RoomAlias{bobs, lobby}) {
		t.Fatalf("aliases = %+v, %v", list, err)
	}
	_, err = carol.GetAliases(ctx, room)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")

	body := map[string]any{"room_id": room.String()}
	fresh := aliasPath("#fresh:test.veche")
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"alias on another server", "PUT", aliasPath("#x:other.example"), alice.AccessToken, body, 400, "M_INVALID_PARAM"},
		{"alias without sigil", "PUT", "/directory/room/lobby:test.veche", alice.AccessToken, body, 400, "M_INVALID_PARAM"},
		{"alias without server", "PUT", aliasPath("#lobby"), alice.AccessToken, body, 400, "M_INVALID_PARAM"},
		{"alias with a bad server name", "PUT", aliasPath("#x:bad_server!"), alice.AccessToken, body, 400, "M_INVALID_PARAM"},
		{"alias too long", "PUT", aliasPath("#" + strings.Repeat("a", 250) + ":test.veche"), alice.AccessToken, body, 400, "M_INVALID_PARAM"},
		{"body not JSON", "PUT", fresh, alice.AccessToken, "room_id", 400, "M_NOT_JSON"},
		{"room_id missing", "PUT", fresh, alice.AccessToken, map[string]any{}, 400, "M_BAD_JSON"},
		{"room_id not a string", "PUT", fresh, alice.AccessToken, map[string]any{"room_id": 5}, 400, "M_BAD_JSON"},
		{"room_id malformed", "PUT", fresh, alice.AccessToken, map[string]any{"room_id": "lobby"}, 400, "M_INVALID_PARAM"},
		{"unknown room", "PUT", fresh, alice.AccessToken, map[string]any{"room_id": "!unknown:test.veche"}, 404, "M_NOT_FOUND"},
		{"not a member", "PUT", fresh, carol.AccessToken, body, 403, "M_FORBIDDEN"},
		{"no token", "PUT", fresh, "", body, 401, "M_MISSING_TOKEN"},
		{"resolve unknown", "GET", aliasPath("#unknown:test.veche"), "", nil, 404, "M_NOT_FOUND"},
		{"resolve remote", "GET", aliasPath("#lobby:elsewhere.example"), "", nil, 502, "M_UNKNOWN"},
		{"resolve malformed", "GET", "/directory/room/lobby", "", nil, 400, "M_INVALID_PARAM"},
		{"delete unknown", "DELETE", aliasPath("#unknown:test.veche"), alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"delete remote", "DELETE", aliasPath("#lobby:elsewhere.example"), alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"delete by outsider", "DELETE", aliasPath(lobby.String()), carol.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"delete by member without power", "DELETE", aliasPath(lobby.String()), bob.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"delete without token", "DELETE", aliasPath(lobby.String()), "", nil, 401, "M_MISSING_TOKEN"},
		{"list of malformed room", "GET", "/rooms/lobby/aliases", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
		{"list of unknown room", "GET", "/rooms/!unknown:test.veche/aliases", alice.AccessToken, nil, 404, "M_NOT_FOUND"},
		{"list without token", "GET", "/rooms/" + room.String() + "/aliases", "", nil, 401, "M_MISSING_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, do(t, tc.method, clientURL(s, tc.path), tc.token, tc.body), tc.status, tc.errcode)
		})
	}
	if res := do(t, "GET", clientURL(s, aliasPath("#lobby:test.veche")), "", nil); res.Status != 200 {
		t.Fatalf("failed deletions removed the alias: %d %s", res.Status, res.Raw)
	}

	// The alias's creator may delete it without any power in the room.
	if _, err := bob.DeleteAlias(ctx, bobs); err != nil {
		t.Fatal(err)
	}
	// A member with the power to change the canonical alias may delete
	// aliases others made.
	if _, err := bob.CreateAlias(ctx, bobs, room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DeleteAlias(ctx, bobs); err != nil {
		t.Fatal(err)
	}
	// So may a server admin, who also sees any room's aliases.
	res := do(t, "GET", clientURL(s, "/rooms/"+room.String()+"/aliases"), admin, nil)
	if res.Status != 200 || fmt.Sprint(res.Body["aliases"]) != "[#lobby:test.veche]" {
		t.Fatalf("admin's alias list: %d %s", res.Status, res.Raw)
	}
	if res := do(t, "DELETE", clientURL(s, aliasPath(lobby.String())), admin, nil); res.Status != 200 {
		t.Fatalf("admin delete: %d %s", res.Status, res.Raw)
	}
	_, err = alice.ResolveAlias(ctx, lobby)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	_, err = alice.DeleteAlias(ctx, lobby)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	// A server admin may create aliases for rooms they are not in.
	res = do(t, "PUT", clientURL(s, aliasPath("#ops:test.veche")), admin, body)
	if res.Status != 200 {
		t.Fatalf("admin create: %d %s", res.Status, res.Raw)
	}
	if list, err := alice.GetAliases(ctx, room); err != nil || !slices.Equal(list.Aliases, []id.RoomAlias{"#ops:test.veche"}) {
		t.Fatalf("aliases = %+v, %v", list, err)
	}

	// Anyone may list the aliases of a room with world-readable history.
	open := createRoomRaw(t, s, alice, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	if list, err := carol.GetAliases(ctx, open); err != nil || list.Aliases == nil || len(list.Aliases) != 0 {
		t.Fatalf("world-readable room's aliases = %+v, %v", list, err)
	}
}

func TestDeletingAliasesUpdatesCanonicalAlias(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	room := createRoomRaw(t, s, alice, map[string]any{"preset": "public_chat", "room_alias_name": "main"})
	join(t, bob, room)
	for _, al := range []struct {
		cli   *mautrix.Client
		alias id.RoomAlias
	}{{alice, "#alt:test.veche"}, {bob, "#bobalt:test.veche"}, {alice, "#other:test.veche"}} {
		if _, err := al.cli.CreateAlias(ctx, al.alias, room); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{
		"alias": "#main:test.veche", "alt_aliases": []string{"#alt:test.veche", "#bobalt:test.veche"},
	}); err != nil {
		t.Fatal(err)
	}
	canonical := func() string {
		t.Helper()
		res := do(t, "GET", clientURL(s, "/rooms/"+room.String()+"/state/m.room.canonical_alias"), alice.AccessToken, nil)
		if res.Status != 200 {
			t.Fatalf("canonical alias: %d %s", res.Status, res.Raw)
		}
		return string(res.Raw)
	}
	for _, step := range []struct {
		name  string
		cli   *mautrix.Client
		alias id.RoomAlias
		want  string
	}{
		// The spec recommends the deletion succeed even when the deleter
		// may not change the canonical alias; the event then stays.
		{"creator without power", bob, "#bobalt:test.veche", `{"alias":"#main:test.veche","alt_aliases":["#alt:test.veche","#bobalt:test.veche"]}`},
		{"alias not in the event", alice, "#other:test.veche", `{"alias":"#main:test.veche","alt_aliases":["#alt:test.veche","#bobalt:test.veche"]}`},
		{"the canonical alias", alice, "#main:test.veche", `{"alt_aliases":["#alt:test.veche","#bobalt:test.veche"]}`},
		{"an alt alias", alice, "#alt:test.veche", `{"alt_aliases":["#bobalt:test.veche"]}`},
	} {
		if _, err := step.cli.DeleteAlias(ctx, step.alias); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := canonical(); got != step.want {
			t.Fatalf("%s: canonical alias = %s, want %s", step.name, got, step.want)
		}
		if _, err := alice.ResolveAlias(ctx, step.alias); err == nil {
			t.Fatalf("%s: %s still resolves", step.name, step.alias)
		}
	}
	// Recreating the deleted alias does not bring it back into the event.
	if _, err := bob.CreateAlias(ctx, "#bobalt:test.veche", room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DeleteAlias(ctx, "#bobalt:test.veche"); err != nil {
		t.Fatal(err)
	}
	if got := canonical(); got != `{}` {
		t.Fatalf("canonical alias = %s, want {}", got)
	}
}

func TestRoomDirectoryVisibility(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	admin := adminToken(t, s, "ops")
	room := createRoomRaw(t, s, alice, map[string]any{"preset": "public_chat", "name": "Town square"})
	join(t, bob, room)
	visPath := "/directory/list/room/" + room.String()

	visibility := func() string {
		t.Helper()
		res := do(t, "GET", clientURL(s, visPath), "", nil) // no token needed
		if res.Status != 200 {
			t.Fatalf("visibility: %d %s", res.Status, res.Raw)
		}
		return res.Body["visibility"].(string)
	}
	listed := func() []string {
		t.Helper()
		res, err := newClient(t, s).PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range res.Chunk {
			ids = append(ids, r.RoomID.String())
		}
		return ids
	}
	if v := visibility(); v != "private" {
		t.Fatalf("new room's visibility = %s", v)
	}
	for _, tc := range []struct {
		name, path, token string
		body              any
		status            int
		errcode           string
	}{
		{"outsider", visPath, carol.AccessToken, map[string]any{"visibility": "public"}, 403, "M_FORBIDDEN"},
		{"member without power", visPath, bob.AccessToken, map[string]any{"visibility": "public"}, 403, "M_FORBIDDEN"},
		{"no token", visPath, "", map[string]any{"visibility": "public"}, 401, "M_MISSING_TOKEN"},
		{"unknown visibility", visPath, alice.AccessToken, map[string]any{"visibility": "everyone"}, 400, "M_INVALID_PARAM"},
		{"visibility not a string", visPath, alice.AccessToken, map[string]any{"visibility": 1}, 400, "M_BAD_JSON"},
		{"body not JSON", visPath, alice.AccessToken, "public", 400, "M_NOT_JSON"},
		{"unknown room", "/directory/list/room/!unknown:test.veche", alice.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"malformed room", "/directory/list/room/square", alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, do(t, "PUT", clientURL(s, tc.path), tc.token, tc.body), tc.status, tc.errcode)
		})
	}
	expectError(t, do(t, "GET", clientURL(s, "/directory/list/room/!unknown:test.veche"), "", nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", clientURL(s, "/directory/list/room/square"), "", nil), 400, "M_INVALID_PARAM")
	if v, l := visibility(), listed(); v != "private" || len(l) != 0 {
		t.Fatalf("refused requests changed the listing: %s %v", v, l)
	}

	// The body's visibility defaults to public (spec).
	if res := do(t, "PUT", clientURL(s, visPath), alice.AccessToken, map[string]any{}); res.Status != 200 {
		t.Fatalf("publish: %d %s", res.Status, res.Raw)
	}
	if v, l := visibility(), listed(); v != "public" || !slices.Equal(l, []string{room.String()}) {
		t.Fatalf("after publishing: %s %v", v, l)
	}
	if res := do(t, "PUT", clientURL(s, visPath), alice.AccessToken, map[string]any{"visibility": "private"}); res.Status != 200 {
		t.Fatalf("unpublish: %d %s", res.Status, res.Raw)
	}
	if v, l := visibility(), listed(); v != "private" || len(l) != 0 {
		t.Fatalf("after unpublishing: %s %v", v, l)
	}
	// A server admin may publish rooms they are not in.
	if res := do(t, "PUT", clientURL(s, visPath), admin, map[string]any{"visibility": "public"}); res.Status != 200 {
		t.Fatalf("admin publish: %d %s", res.Status, res.Raw)
	}
	if l := listed(); !slices.Equal(l, []string{room.String()}) {
		t.Fatalf("after the admin published: %v", l)
	}

	// Published invite-only rooms stay out of the list unless their
	// history is world readable (as in Synapse), so that a mistaken
	// publication reveals nothing.
	secret := createRoomRaw(t, s, alice, map[string]any{"preset": "private_chat", "visibility": "public", "name": "Secret"})
	readable := createRoomRaw(t, s, alice, map[string]any{"preset": "private_chat", "visibility": "public", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	if res := do(t, "GET", clientURL(s, "/directory/list/room/"+secret.String()), "", nil); res.Body["visibility"] != "public" {
		t.Fatalf("secret room's visibility: %s", res.Raw)
	}
	got := listed()
	if slices.Contains(got, secret.String()) || !slices.Contains(got, readable.String()) || len(got) != 2 {
		t.Fatalf("listed = %v; want %s and %s", got, room, readable)
	}
}

// publicRoomsPage is a /publicRooms answer.
type publicRoomsPage struct {
	Chunk []struct {
		RoomID           string `json:"room_id"`
		NumJoinedMembers int    `json:"num_joined_members"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     int    `json:"total_room_count_estimate"`
}

func postPublicRooms(t *testing.T, cli *mautrix.Client, body map[string]any) publicRoomsPage {
	t.Helper()
	var page publicRoomsPage
	if _, err := cli.MakeRequest(ctx, "POST", cli.BuildClientURL("v3", "publicRooms"), body, &page); err != nil {
		t.Fatal(err)
	}
	return page
}

func getPublicRooms(t *testing.T, s *testserver.Server, query string) publicRoomsPage {
	t.Helper()
	res := do(t, "GET", clientURL(s, "/publicRooms?"+query), "", nil)
	if res.Status != 200 {
		t.Fatalf("publicRooms?%s: %d %s", query, res.Status, res.Raw)
	}
	var page publicRoomsPage
	if err := json.Unmarshal(res.Raw, &page); err != nil {
		t.Fatal(err)
	}
	return page
}

func TestPublicRoomsEntriesAndFilters(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	lobby := createRoomRaw(t, s, alice, map[string]any{
		"visibility": "public", "preset": "public_chat", "name": "Lobby", "topic": "General CHATTER", "room_alias_name": "lobby",
		"initial_state": []any{
			map[string]any{"type": "m.room.avatar", "state_key": "", "content": map[string]any{"url": "mxc://test.veche/avatar"}},
			map[string]any{"type": "m.room.guest_access", "state_key": "", "content": map[string]any{"guest_access": "can_join"}},
			map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
		},
	})
	join(t, bob, lobby)
	space := createRoomRaw(t, s, alice, map[string]any{
		"visibility": "public", "preset": "public_chat", "name": "Projects", "creation_content": map[string]any{"type": "m.space"},
		"initial_state": []any{map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{
			"topic": "fallback", "m.topic": map[string]any{"m.text": []any{
				map[string]any{"mimetype": "text/html", "body": "<b>Work</b> rooms"}, map[string]any{"body": "Work rooms"},
			}},
		}}},
	})
	knock := createRoomRaw(t, s, alice, map[string]any{"visibility": "public", "preset": "private_chat", "name": "Knockers", "initial_state": []any{
		map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}},
	}})
	createRoomRaw(t, s, alice, map[string]any{"preset": "public_chat", "name": "Unpublished lobby"})
	// Published rooms everyone left are not listed (as in Synapse).
	empty := createRoomRaw(t, s, bob, map[string]any{"visibility": "public", "preset": "public_chat", "name": "Deserted"})
	leave(t, bob, empty)

	// Unauthenticated GET and the mautrix client see every field.
	res, err := newClient(t, s).PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "test.veche"})
	if err != nil {
		t.Fatal(err)
	}
	if res.TotalRoomCountEstimate != 3 || len(res.Chunk) != 3 || res.NextBatch != "" || res.PrevBatch != "" {
		t.Fatalf("public rooms = %+v", res)
	}
	first := res.Chunk[0]
	if first.RoomID != lobby || first.Name != "Lobby" || first.Topic != "General CHATTER" || first.CanonicalAlias != "#lobby:test.veche" ||
		first.NumJoinedMembers != 2 || !first.WorldReadable || !first.GuestCanJoin || first.AvatarURL != "mxc://test.veche/avatar" ||
		first.JoinRule != "public" || first.RoomType != "" {
		t.Fatalf("lobby entry = %+v", first)
	}
	byID := map[id.RoomID]*mautrix.PublicRoomInfo{}
	for _, r := range res.Chunk {
		byID[r.RoomID] = r
	}
	if sp := byID[space]; sp == nil || sp.RoomType != "m.space" || sp.Topic != "Work rooms" || sp.WorldReadable || sp.GuestCanJoin || sp.NumJoinedMembers != 1 {
		t.Fatalf("space entry = %+v", sp)
	}
	if k := byID[knock]; k == nil || k.JoinRule != "knock" {
		t.Fatalf("knock entry = %+v", k)
	}

	for _, tc := range []struct {
		name   string
		filter map[string]any
		want   []id.RoomID
	}{
		{"name, any case", map[string]any{"generic_search_term": "lOBBY"}, []id.RoomID{lobby}},
		{"topic", map[string]any{"generic_search_term": "chatter"}, []id.RoomID{lobby}},
		{"plain m.topic", map[string]any{"generic_search_term": "work rooms"}, []id.RoomID{space}},
		{"canonical alias", map[string]any{"generic_search_term": "#lobby:test"}, []id.RoomID{lobby}},
		{"nothing matches", map[string]any{"generic_search_term": "unpublished"}, nil},
		{"spaces", map[string]any{"room_types": []any{"m.space"}}, []id.RoomID{space}},
		{"rooms without a type", map[string]any{"room_types": []any{nil}}, []id.RoomID{lobby, knock}},
		{"both", map[string]any{"room_types": []any{nil, "m.space"}}, []id.RoomID{lobby, space, knock}},
		{"empty filter", map[string]any{}, []id.RoomID{lobby, space, knock}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := postPublicRooms(t, bob, map[string]any{"filter": tc.filter})
			var got []id.RoomID
			for _, c := range page.Chunk {
				got = append(got, id.RoomID(c.RoomID))
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) || page.Total != len(tc.want) {
				t.Fatalf("got %v (total %d), want %v", got, page.Total, want)
			}
		})
	}
	// No application service bridges a network here.
	if page := postPublicRooms(t, bob, map[string]any{"third_party_instance_id": "irc|libera"}); len(page.Chunk) != 0 {
		t.Fatalf("third-party network listing = %+v", page)
	}
	if page := postPublicRooms(t, bob, map[string]any{"include_all_networks": true}); len(page.Chunk) != 3 {
		t.Fatalf("all networks listing = %+v", page)
	}

	for _, tc := range []struct {
		name, method, query, token string
		body                       any
		status                     int
		errcode                    string
	}{
		{"POST needs a token", "POST", "", "", map[string]any{}, 401, "M_MISSING_TOKEN"},
		{"POST body not JSON", "POST", "", bob.AccessToken, "limit=3", 400, "M_NOT_JSON"},
		{"POST limit not a number", "POST", "", bob.AccessToken, map[string]any{"limit": "3"}, 400, "M_BAD_JSON"},
		{"POST negative limit", "POST", "", bob.AccessToken, map[string]any{"limit": -1}, 400, "M_INVALID_PARAM"},
		{"POST filter not an object", "POST", "", bob.AccessToken, map[string]any{"filter": "lobby"}, 400, "M_BAD_JSON"},
		{"POST bad token", "POST", "", bob.AccessToken, map[string]any{"since": "not a token"}, 400, "M_INVALID_PARAM"},
		{"POST both network options", "POST", "", bob.AccessToken, map[string]any{"include_all_networks": true, "third_party_instance_id": "irc"}, 400, "M_INVALID_PARAM"},
		{"GET limit not a number", "GET", "?limit=three", "", nil, 400, "M_INVALID_PARAM"},
		{"GET negative limit", "GET", "?limit=-5", "", nil, 400, "M_INVALID_PARAM"},
		{"GET bad token", "GET", "?since=%00", "", nil, 400, "M_INVALID_PARAM"},
		{"GET token of another shape", "GET", "?since=e30", "", nil, 400, "M_INVALID_PARAM"},
		{"GET bad boolean", "GET", "?include_all_networks=yes", "", nil, 400, "M_INVALID_PARAM"},
		// Other servers' directories come over federation (tested with two
		// servers in package federation); this one cannot be reached.
		{"GET other server", "GET", "?server=other.example", "", nil, 502, "M_UNKNOWN"},
		{"GET invalid server", "GET", "?server=bad_server!", "", nil, 400, "M_INVALID_PARAM"},
		{"POST other server", "POST", "?server=other.example", bob.AccessToken, map[string]any{}, 502, "M_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, do(t, tc.method, clientURL(s, "/publicRooms"+tc.query), tc.token, tc.body), tc.status, tc.errcode)
		})
	}
}

func TestPublicRoomsPagination(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	users := make([]*mautrix.Client, 7)
	for i := range users {
		users[i] = registerUser(t, s, fmt.Sprintf("user%d", i))
	}
	// rooms[i] has i+1 joined members: its creator, users[0], and users[1..i].
	rooms := make([]id.RoomID, 7)
	for i := range rooms {
		rooms[i] = createRoomRaw(t, s, users[0], map[string]any{"visibility": "public", "preset": "public_chat", "name": fmt.Sprintf("Room %d", i)})
		for _, u := range users[1 : i+1] {
			join(t, u, rooms[i])
		}
	}
	ids := func(p publicRoomsPage) []id.RoomID {
		var out []id.RoomID
		for _, c := range p.Chunk {
			out = append(out, id.RoomID(c.RoomID))
		}
		return out
	}
	largestFirst := []id.RoomID{rooms[6], rooms[5], rooms[4], rooms[3], rooms[2], rooms[1], rooms[0]}
	if got := ids(getPublicRooms(t, s, "")); !slices.Equal(got, largestFirst) {
		t.Fatalf("order = %v, want %v", got, largestFirst)
	}

	// Forwards with limit 3, then back from the last page.
	var pages []publicRoomsPage
	since := ""
	for {
		p := getPublicRooms(t, s, "limit=3&since="+url.QueryEscape(since))
		if p.Total != 7 {
			t.Fatalf("total_room_count_estimate = %d", p.Total)
		}
		if (len(pages) == 0) != (p.PrevBatch == "") {
			t.Fatalf("page %d: prev_batch = %q", len(pages), p.PrevBatch)
		}
		pages = append(pages, p)
		if p.NextBatch == "" {
			break
		}
		since = p.NextBatch
	}
	var all []id.RoomID
	for _, p := range pages {
		all = append(all, ids(p)...)
	}
	if len(pages) != 3 || !slices.Equal(all, largestFirst) {
		t.Fatalf("%d pages with %v, want %v", len(pages), all, largestFirst)
	}
	back := getPublicRooms(t, s, "limit=3&since="+url.QueryEscape(pages[2].PrevBatch))
	if !slices.Equal(ids(back), largestFirst[3:6]) || back.NextBatch == "" || back.PrevBatch == "" {
		t.Fatalf("back from the last page: %v (next %q, prev %q)", ids(back), back.NextBatch, back.PrevBatch)
	}
	back = getPublicRooms(t, s, "limit=3&since="+url.QueryEscape(back.PrevBatch))
	if !slices.Equal(ids(back), largestFirst[:3]) || back.PrevBatch != "" {
		t.Fatalf("back to the first page: %v (prev %q)", ids(back), back.PrevBatch)
	}

	// Member counts change between pages, enough to move rooms across the
	// pages' boundaries. Paging on (count, room ID) of the live counts
	// would then skip rooms[0] (grown past the first page's end) and
	// repeat rooms[4] (shrunk past the second page's end).
	reader := users[6]
	p1 := postPublicRooms(t, reader, map[string]any{"limit": 3})
	if !slices.Equal(ids(p1), largestFirst[:3]) {
		t.Fatalf("page 1 = %v", ids(p1))
	}
	for _, u := range users[1:5] {
		leave(t, u, rooms[4]) // 5 → 1 member
	}
	for _, u := range users[1:6] {
		join(t, u, rooms[0]) // 1 → 6 members
	}
	p2 := postPublicRooms(t, reader, map[string]any{"limit": 3, "since": p1.NextBatch})
	join(t, users[6], rooms[1])  // 2 → 3 members
	leave(t, users[1], rooms[3]) // 4 → 3 members
	p3 := postPublicRooms(t, reader, map[string]any{"limit": 3, "since": p2.NextBatch})
	// The listing keeps the order it had when it started.
	if !slices.Equal(ids(p2), largestFirst[3:6]) || !slices.Equal(ids(p3), largestFirst[6:]) || p3.NextBatch != "" {
		t.Fatalf("pages 2 and 3 = %v, %v (next %q)", ids(p2), ids(p3), p3.NextBatch)
	}
	seen := map[id.RoomID]int{}
	for _, p := range []publicRoomsPage{p1, p2, p3} {
		for _, r := range ids(p) {
			seen[r]++
		}
	}
	for _, r := range rooms {
		if seen[r] != 1 {
			t.Errorf("room %s listed %d times across the pages: %v / %v / %v", r, seen[r], ids(p1), ids(p2), ids(p3))
		}
	}
	// The counts shown are the current ones.
	for _, c := range p3.Chunk {
		if id.RoomID(c.RoomID) == rooms[0] && c.NumJoinedMembers != 6 {
			t.Errorf("rooms[0] shows %d members, want 6", c.NumJoinedMembers)
		}
	}
	// A new listing orders by the new counts.
	counts := map[id.RoomID]int{rooms[0]: 6, rooms[1]: 3, rooms[2]: 3, rooms[3]: 3, rooms[4]: 1, rooms[5]: 6, rooms[6]: 7}
	want := slices.Clone(rooms)
	sort.Slice(want, func(i, j int) bool {
		if counts[want[i]] != counts[want[j]] {
			return counts[want[i]] > counts[want[j]]
		}
		return want[i] < want[j]
	})
	fresh := getPublicRooms(t, s, "")
	if !slices.Equal(ids(fresh), want) {
		t.Fatalf("fresh listing = %v, want %v", ids(fresh), want)
	}
	for _, c := range fresh.Chunk {
		if c.NumJoinedMembers != counts[id.RoomID(c.RoomID)] {
			t.Errorf("%s shows %d members, want %d", c.RoomID, c.NumJoinedMembers, counts[id.RoomID(c.RoomID)])
		}
	}
}

func TestUserDirectory(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	names := []string{"alice", "bob", "carol", "dave", "erin", "frank", "gina", "henry"}
	cli := map[string]*mautrix.Client{}
	for _, n := range names {
		cli[n] = registerUser(t, s, n)
		if err := cli[n].SetDisplayName(ctx, "Searchable "+n); err != nil {
			t.Fatal(err)
		}
	}
	// bob shares a private room with alice; henry is only invited to it.
	shared := createRoomRaw(t, s, cli["alice"], map[string]any{"preset": "private_chat", "invite": []string{"@bob:test.veche", "@henry:test.veche"}})
	join(t, cli["bob"], shared)
	// carol is alone in a room anyone may join, dave in one anyone may read.
	createRoomRaw(t, s, cli["carol"], map[string]any{"preset": "public_chat"})
	createRoomRaw(t, s, cli["dave"], map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	// erin's room is private; gina is in no room.
	createRoomRaw(t, s, cli["erin"], map[string]any{"preset": "private_chat"})
	// frank is in a public room but deactivated.
	createRoomRaw(t, s, cli["frank"], map[string]any{"preset": "public_chat"})
	if err := s.Accounts().Deactivate(ctx, "frank", false); err != nil {
		t.Fatal(err)
	}

	type result struct {
		UserID      string `json:"user_id"`
		DisplayName string `json:"display_name"`
	}
	search := func(t *testing.T, who string, body map[string]any) ([]result, bool) {
		t.Helper()
		res := do(t, "POST", clientURL(s, "/user_directory/search"), cli[who].AccessToken, body)
		if res.Status != 200 {
			t.Fatalf("search %v: %d %s", body, res.Status, res.Raw)
		}
		var out struct {
			Results []result `json:"results"`
			Limited bool     `json:"limited"`
		}
		if err := json.Unmarshal(res.Raw, &out); err != nil || out.Results == nil {
			t.Fatalf("search answer %s: %v", res.Raw, err)
		}
		return out.Results, out.Limited
	}
	userIDs := func(rs []result) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.UserID)
		}
		return out
	}
	for _, tc := range []struct {
		name, who, term string
		want            []string
	}{
		{"by display name", "alice", "searchable", []string{"@alice:test.veche", "@bob:test.veche", "@carol:test.veche", "@dave:test.veche"}},
		{"case-insensitively", "alice", "SEARCHABLE", []string{"@alice:test.veche", "@bob:test.veche", "@carol:test.veche", "@dave:test.veche"}},
		{"by localpart", "alice", "aro", []string{"@carol:test.veche"}},
		{"by user ID", "alice", "@dave:test.veche", []string{"@dave:test.veche"}},
		{"exactly", "alice", "bob", []string{"@bob:test.veche"}},
		{"not sharing a private room", "alice", "erin", nil},
		{"only invited", "alice", "henry", nil},
		{"in no room", "alice", "gina", nil},
		{"deactivated", "alice", "frank", nil},
		{"blank term", "alice", "  ", nil},
		// erin shares nothing with anyone but sees the open rooms' members
		// and herself.
		{"from a private room", "erin", "searchable", []string{"@carol:test.veche", "@dave:test.veche", "@erin:test.veche"}},
		// henry's invite shows him nothing of the room.
		{"invitee", "henry", "searchable", []string{"@carol:test.veche", "@dave:test.veche"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, limited := search(t, tc.who, map[string]any{"search_term": tc.term})
			got := userIDs(rs)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) || limited {
				t.Fatalf("got %v (limited %v), want %v", got, limited, tc.want)
			}
			for _, r := range rs {
				if r.DisplayName != "Searchable "+r.UserID[1:len(r.UserID)-len(":test.veche")] {
					t.Errorf("display name of %s = %q", r.UserID, r.DisplayName)
				}
			}
		})
	}
	// Ranking: a prefix of the localpart before a substring of display
	// names, then by user ID.
	rs, _ := search(t, "alice", map[string]any{"search_term": "b"})
	if got, want := userIDs(rs), []string{"@bob:test.veche", "@alice:test.veche", "@carol:test.veche", "@dave:test.veche"}; !slices.Equal(got, want) {
		t.Fatalf("ranked results = %v, want %v", got, want)
	}
	rs, limited := search(t, "alice", map[string]any{"search_term": "searchable", "limit": 2})
	if len(rs) != 2 || !limited {
		t.Fatalf("limit 2: %v, limited %v", userIDs(rs), limited)
	}
	// The default limit is 10; mautrix's client reads the same answer.
	mres, err := cli["alice"].SearchUserDirectory(ctx, "car", 0)
	if err != nil || len(mres.Results) != 1 || mres.Results[0].UserID != "@carol:test.veche" || mres.Limited {
		t.Fatalf("mautrix search = %+v, %v", mres, err)
	}

	for _, tc := range []struct {
		name, token string
		body        any
		status      int
		errcode     string
	}{
		{"no token", "", map[string]any{"search_term": "a"}, 401, "M_MISSING_TOKEN"},
		{"not JSON", cli["alice"].AccessToken, "a", 400, "M_NOT_JSON"},
		{"no search_term", cli["alice"].AccessToken, map[string]any{}, 400, "M_BAD_JSON"},
		{"search_term not a string", cli["alice"].AccessToken, map[string]any{"search_term": 1}, 400, "M_BAD_JSON"},
		{"negative limit", cli["alice"].AccessToken, map[string]any{"search_term": "a", "limit": -1}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, do(t, "POST", clientURL(s, "/user_directory/search"), tc.token, tc.body), tc.status, tc.errcode)
		})
	}
}
