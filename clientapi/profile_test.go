package clientapi_test

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

func TestProfile(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")

	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	avatar := id.ContentURI{Homeserver: "test.veche", FileID: "abcDEF123"}
	if err := alice.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetProfileField(ctx, "m.tz", "Europe/Berlin"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetProfileField(ctx, "org.example.pronouns", map[string]any{"en": "she/her"}); err != nil {
		t.Fatal(err)
	}
	// Anyone, even without a token, reads a profile.
	p := do(t, "GET", clientURL(s, "/profile/@alice:test.veche"), "", nil)
	if p.Status != 200 || p.Body["displayname"] != "Alice Liddell" || p.Body["avatar_url"] != "mxc://test.veche/abcDEF123" ||
		p.Body["m.tz"] != "Europe/Berlin" || p.Body["org.example.pronouns"].(map[string]any)["en"] != "she/her" {
		t.Fatalf("profile = %s", p.Raw)
	}
	profile, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil || profile.DisplayName != "Alice Liddell" || profile.AvatarURL != avatar {
		t.Fatalf("mautrix profile = %+v, %v", profile, err)
	}
	name, err := bob.GetDisplayName(ctx, alice.UserID)
	if err != nil || name.DisplayName != "Alice Liddell" {
		t.Fatalf("displayname = %+v, %v", name, err)
	}
	if err := alice.DeleteProfileField(ctx, "m.tz"); err != nil {
		t.Fatal(err)
	}
	expectError(t, do(t, "GET", clientURL(s, "/profile/@alice:test.veche/m.tz"), "", nil), 404, "M_NOT_FOUND")
	// Clearing the avatar with "" is what clients send.
	if r := do(t, "PUT", clientURL(s, "/profile/@alice:test.veche/avatar_url"), alice.AccessToken, map[string]any{"avatar_url": ""}); r.Status != 200 {
		t.Fatalf("clear avatar = %d %s", r.Status, r.Raw)
	}

	put := func(key string, body any) response {
		return do(t, "PUT", clientURL(s, "/profile/@alice:test.veche/"+key), alice.AccessToken, body)
	}
	tests := []struct {
		name, key string
		body      any
		status    int
		errcode   string
	}{
		{"displayname not a string", "displayname", map[string]any{"displayname": 5}, 400, "M_BAD_JSON"},
		{"avatar not mxc", "avatar_url", map[string]any{"avatar_url": "https://evil.example/x.png"}, 400, "M_INVALID_PARAM"},
		{"key missing from body", "displayname", map[string]any{"other": "x"}, 400, "M_MISSING_PARAM"},
		{"bad key grammar", "Pronouns", map[string]any{"Pronouns": "x"}, 400, "M_INVALID_PARAM"},
		{"un-namespaced key", "pronouns", map[string]any{"pronouns": "x"}, 400, "M_INVALID_PARAM"},
		{"key too long", "org.example." + strings.Repeat("k", 250), map[string]any{}, 400, "M_KEY_TOO_LARGE"},
		{"not JSON", "displayname", "nope", 400, "M_NOT_JSON"},
		{"displayname too long", "displayname", map[string]any{"displayname": strings.Repeat("n", 300)}, 400, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectError(t, put(tt.key, tt.body), tt.status, tt.errcode) })
	}

	// The whole profile is capped at 64 KiB.
	big := strings.Repeat("x", 40*1024)
	if r := put("org.example.one", map[string]any{"org.example.one": big}); r.Status != 200 {
		t.Fatalf("first big field = %d %s", r.Status, r.Raw)
	}
	expectError(t, put("org.example.two", map[string]any{"org.example.two": big}), 400, "M_PROFILE_TOO_LARGE")

	// Nobody edits someone else's profile.
	expectError(t, do(t, "PUT", clientURL(s, "/profile/@alice:test.veche/displayname"), bob.AccessToken, map[string]any{"displayname": "Mallory"}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "DELETE", clientURL(s, "/profile/@alice:test.veche/displayname"), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "PUT", clientURL(s, "/profile/@alice:test.veche/displayname"), "", map[string]any{"displayname": "Mallory"}), 401, "M_MISSING_TOKEN")

	expectError(t, do(t, "GET", clientURL(s, "/profile/@nobody:test.veche"), "", nil), 404, "M_NOT_FOUND")
	expectError(t, do(t, "GET", clientURL(s, "/profile/@someone:remote.example"), "", nil), 502, "M_UNKNOWN")
	expectError(t, do(t, "GET", clientURL(s, "/profile/not-a-user-id"), "", nil), 400, "M_INVALID_PARAM")
}
