package clientapi_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/veche/veche/internal/testserver"
)

func TestAccountData(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")

	type prefs struct {
		Theme string `json:"theme"`
		Size  int    `json:"size"`
	}
	if err := alice.SetAccountData(ctx, "org.example.prefs", prefs{"dark", 3}); err != nil {
		t.Fatal(err)
	}
	var got prefs
	if err := alice.GetAccountData(ctx, "org.example.prefs", &got); err != nil || got != (prefs{"dark", 3}) {
		t.Fatalf("account data = %+v, %v", got, err)
	}
	if err := alice.SetAccountData(ctx, "org.example.prefs", prefs{"light", 4}); err != nil {
		t.Fatal(err)
	}
	if err := alice.GetAccountData(ctx, "org.example.prefs", &got); err != nil || got.Theme != "light" {
		t.Fatalf("overwritten account data = %+v, %v", got, err)
	}
	if err := alice.SetRoomAccountData(ctx, "!room:test.veche", "m.tag", map[string]any{"tags": map[string]any{"u.work": map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	var tags map[string]any
	if err := alice.GetRoomAccountData(ctx, "!room:test.veche", "m.tag", &tags); err != nil || tags["tags"] == nil {
		t.Fatalf("room account data = %v, %v", tags, err)
	}
	// Room and global data are separate namespaces.
	err := alice.GetAccountData(ctx, "m.tag", &tags)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	err = bob.GetAccountData(ctx, "org.example.prefs", &got)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")

	aliceData := clientURL(s, "/user/@alice:test.veche/account_data/")
	expectError(t, do(t, "GET", aliceData+"org.example.prefs", bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "PUT", aliceData+"org.example.prefs", bob.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "PUT", aliceData+"m.fully_read", alice.AccessToken, map[string]any{"event_id": "$x"}), 405, "M_BAD_JSON")
	expectError(t, do(t, "PUT", aliceData+"m.push_rules", alice.AccessToken, map[string]any{}), 405, "M_BAD_JSON")
	expectError(t, do(t, "PUT", aliceData+"org.example.x", alice.AccessToken, `"a string"`), 400, "M_NOT_JSON")
	expectError(t, do(t, "PUT", aliceData+"org.example.x", alice.AccessToken, `{"unterminated": `), 400, "M_NOT_JSON")
	expectError(t, do(t, "PUT", clientURL(s, "/user/@alice:test.veche/rooms/not-a-room/account_data/m.tag"), alice.AccessToken, map[string]any{}), 400, "M_INVALID_PARAM")
}

func TestFilters(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	limit := 20
	f := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit, LazyLoadMembers: true}}}
	resp, err := alice.CreateFilter(ctx, f)
	if err != nil || resp.FilterID != "0" {
		t.Fatalf("create filter = %+v, %v", resp, err)
	}
	again, err := alice.CreateFilter(ctx, f)
	if err != nil || again.FilterID != resp.FilterID {
		t.Fatalf("identical filter got ID %v, want %s (%v)", again, resp.FilterID, err)
	}
	other, err := alice.CreateFilter(ctx, &mautrix.Filter{Presence: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}}})
	if err != nil || other.FilterID != "1" {
		t.Fatalf("second filter = %+v, %v", other, err)
	}
	r := do(t, "GET", clientURL(s, "/user/@alice:test.veche/filter/0"), alice.AccessToken, nil)
	timeline := r.Body["room"].(map[string]any)["timeline"].(map[string]any)
	if r.Status != 200 || timeline["limit"].(float64) != 20 || timeline["lazy_load_members"] != true {
		t.Fatalf("get filter = %d %s", r.Status, r.Raw)
	}
	expectError(t, do(t, "GET", clientURL(s, "/user/@alice:test.veche/filter/0"), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/user/@bob:test.veche/filter/0"), bob.AccessToken, nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", clientURL(s, "/user/@alice:test.veche/filter/abc"), alice.AccessToken, nil), 404, "M_NOT_FOUND")
	post := clientURL(s, "/user/@alice:test.veche/filter")
	expectError(t, do(t, "POST", post, bob.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "POST", post, alice.AccessToken, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}}), 400, "M_BAD_JSON")
	expectError(t, do(t, "POST", post, alice.AccessToken, map[string]any{"event_format": "xml"}), 400, "M_BAD_JSON")
	expectError(t, do(t, "POST", post, alice.AccessToken, "[]"), 400, "M_NOT_JSON")
}
