package clientapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/storage"
)

// openDB opens the test server's database alongside it, to look at what
// no client endpoint returns yet (receipts reach clients through sync).
func openDB(t *testing.T, s *testserver.Server) *storage.DB {
	t.Helper()
	backend, dsn, err := s.Config.Database.Parse(s.Config.Dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(ctx, backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sharedRoom has alice create a public room that bob joins, with alice's
// messages "one", "two", "three" in it.
func sharedRoom(t *testing.T, alice, bob *mautrix.Client) (id.RoomID, []id.EventID) {
	t.Helper()
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	var evs []id.EventID
	for _, text := range []string{"one", "two", "three"} {
		sent, err := alice.SendText(ctx, resp.RoomID, text)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, sent.EventID)
	}
	return resp.RoomID, evs
}

// receiptsOf returns a user's receipts in a room as "type/thread" → event.
func receiptsOf(t *testing.T, db *storage.DB, roomID id.RoomID, user id.UserID) map[string]id.EventID {
	t.Helper()
	room, err := db.RoomByID(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := db.UserReceipts(ctx, room.NID, string(user))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]id.EventID{}
	for _, r := range rs {
		out[r.Type+"/"+r.ThreadID] = id.EventID(r.EventID)
	}
	return out
}

func TestTyping(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	roomID, _ := sharedRoom(t, alice, bob)

	if _, err := alice.UserTyping(ctx, roomID, true, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
		t.Fatal(err)
	}
	// Timeouts beyond the cap are accepted and capped.
	if _, err := bob.UserTyping(ctx, roomID, true, 1000*time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := carol.UserTyping(ctx, roomID, true, time.Second)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")

	typingURL := func(room id.RoomID, user id.UserID) string {
		return clientURL(s, "/rooms/"+string(room)+"/typing/"+string(user))
	}
	url := typingURL(roomID, alice.UserID)
	expectError(t, do(t, "PUT", typingURL(roomID, bob.UserID), alice.AccessToken, map[string]any{"typing": true}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "PUT", url, alice.AccessToken, "not json"), 400, "M_NOT_JSON")
	expectError(t, do(t, "PUT", url, alice.AccessToken, map[string]any{"typing": "yes"}), 400, "M_BAD_JSON")
	expectError(t, do(t, "PUT", url, alice.AccessToken, map[string]any{"typing": true, "timeout": "long"}), 400, "M_BAD_JSON")
	expectError(t, do(t, "PUT", url, alice.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")
	expectError(t, do(t, "PUT", url, alice.AccessToken, map[string]any{"typing": true, "timeout": -1}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "PUT", typingURL("not-a-room", alice.UserID), alice.AccessToken, map[string]any{"typing": true}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "PUT", typingURL("!nope:test.veche", alice.UserID), alice.AccessToken, map[string]any{"typing": true}), 404, "M_NOT_FOUND")
	expectError(t, do(t, "PUT", url, "", map[string]any{"typing": true}), 401, "M_MISSING_TOKEN")

	// After leaving, typing is refused.
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.UserTyping(ctx, roomID, true, time.Second)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
}

func TestReceipts(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	db := openDB(t, s)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	roomID, evs := sharedRoom(t, alice, bob)
	one, two, three := evs[0], evs[1], evs[2]

	if err := bob.SendReceipt(ctx, roomID, two, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if got := receiptsOf(t, db, roomID, bob.UserID); got["m.read/"] != two {
		t.Fatalf("receipts = %v", got)
	}
	// An older event is accepted and ignored: receipts never go back.
	if err := bob.SendReceipt(ctx, roomID, one, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if got := receiptsOf(t, db, roomID, bob.UserID); got["m.read/"] != two {
		t.Fatalf("receipt moved back: %v", got)
	}
	if err := bob.MarkRead(ctx, roomID, three); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, roomID, one, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if got := receiptsOf(t, db, roomID, bob.UserID); got["m.read/"] != three || got["m.read.private/"] != one {
		t.Fatalf("receipts = %v", got)
	}

	// Threaded receipts (spec: "Threaded read receipts").
	reply, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": one},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, roomID, reply.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(one)}); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, roomID, two, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
		t.Fatal(err)
	}
	// A thread's root belongs to the main timeline and, for its receipt,
	// to its thread.
	if err := bob.SendReceipt(ctx, roomID, one, event.ReceiptTypeReadPrivate, &mautrix.ReqSendReceipt{ThreadID: string(one)}); err != nil {
		t.Fatal(err)
	}
	got := receiptsOf(t, db, roomID, bob.UserID)
	if got["m.read/"+string(one)] != reply.EventID || got["m.read/main"] != two || got["m.read/"] != three || got["m.read.private/"+string(one)] != one {
		t.Fatalf("threaded receipts = %v", got)
	}
	receiptURL := func(typ string, ev id.EventID) string {
		return clientURL(s, "/rooms/"+string(roomID)+"/receipt/"+typ+"/"+string(ev))
	}
	tok := bob.AccessToken
	expectError(t, do(t, "POST", receiptURL("m.read", reply.EventID), tok, map[string]any{"thread_id": "main"}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.read", two), tok, map[string]any{"thread_id": string(one)}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.read", two), tok, map[string]any{"thread_id": ""}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.read", two), tok, map[string]any{"thread_id": 5}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.fully_read", two), tok, map[string]any{"thread_id": "main"}), 400, "M_INVALID_PARAM")

	// m.fully_read through /receipt moves the read marker.
	if err := bob.SendReceipt(ctx, roomID, two, "m.fully_read", nil); err != nil {
		t.Fatal(err)
	}
	var marker struct {
		EventID id.EventID `json:"event_id"`
	}
	if err := bob.GetRoomAccountData(ctx, roomID, "m.fully_read", &marker); err != nil || marker.EventID != two {
		t.Fatalf("m.fully_read = %+v, %v", marker, err)
	}
	if _, ok := receiptsOf(t, db, roomID, bob.UserID)["m.fully_read/"]; ok {
		t.Fatal("m.fully_read stored as a receipt")
	}

	// A body is optional in practice (older clients send none).
	if r := do(t, "POST", receiptURL("m.read", three), tok, nil); r.Status != 200 {
		t.Fatalf("receipt without a body: %d %s", r.Status, r.Raw)
	}
	expectError(t, do(t, "POST", receiptURL("m.read", three), tok, "[]"), 400, "M_NOT_JSON")
	expectError(t, do(t, "POST", receiptURL("m.unknown", three), tok, map[string]any{}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.read", "$nope"), tok, map[string]any{}), 404, "M_NOT_FOUND")
	expectError(t, do(t, "POST", receiptURL("m.read", "nope"), tok, map[string]any{}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", receiptURL("m.read", three), carol.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "POST", clientURL(s, "/rooms/!nope:test.veche/receipt/m.read/"+string(three)), tok, map[string]any{}), 404, "M_NOT_FOUND")

	// An event of another room is not found in this one.
	other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := alice.SendText(ctx, other.RoomID, "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, do(t, "POST", receiptURL("m.read", elsewhere.EventID), tok, map[string]any{}), 404, "M_NOT_FOUND")

	// Events from before a member could see the room are not found.
	if _, err := alice.SendStateEvent(ctx, other.RoomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
		t.Fatal(err)
	}
	hidden, err := alice.SendText(ctx, other.RoomID, "before carol")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, other.RoomID); err != nil {
		t.Fatal(err)
	}
	err = carol.MarkRead(ctx, other.RoomID, hidden.EventID)
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	after, err := alice.SendText(ctx, other.RoomID, "after carol")
	if err != nil {
		t.Fatal(err)
	}
	if err := carol.MarkRead(ctx, other.RoomID, after.EventID); err != nil {
		t.Fatal(err)
	}
}

func TestReadMarkers(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	db := openDB(t, s)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	roomID, evs := sharedRoom(t, alice, bob)
	one, two, three := evs[0], evs[1], evs[2]

	marker := func() id.EventID {
		t.Helper()
		var m struct {
			EventID id.EventID `json:"event_id"`
		}
		if err := bob.GetRoomAccountData(ctx, roomID, "m.fully_read", &m); err != nil {
			t.Fatal(err)
		}
		return m.EventID
	}
	err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: two, Read: two, ReadPrivate: three})
	if err != nil {
		t.Fatal(err)
	}
	if got := marker(); got != two {
		t.Fatalf("m.fully_read = %s, want %s", got, two)
	}
	if got := receiptsOf(t, db, roomID, bob.UserID); got["m.read/"] != two || got["m.read.private/"] != three {
		t.Fatalf("receipts = %v", got)
	}
	// The marker never moves back.
	if err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: one}); err != nil {
		t.Fatal(err)
	}
	if got := marker(); got != two {
		t.Fatalf("m.fully_read moved back to %s", got)
	}
	if err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: three}); err != nil {
		t.Fatal(err)
	}
	if got := marker(); got != three {
		t.Fatalf("m.fully_read = %s, want %s", got, three)
	}
	// Only the server sets it.
	expectError(t, do(t, "PUT", clientURL(s, "/user/"+string(bob.UserID)+"/rooms/"+string(roomID)+"/account_data/m.fully_read"),
		bob.AccessToken, map[string]any{"event_id": one}), 405, "M_BAD_JSON")

	url := clientURL(s, "/rooms/"+string(roomID)+"/read_markers")
	// One unknown event and nothing is written.
	expectError(t, do(t, "POST", url, bob.AccessToken, map[string]any{"m.read": three, "m.fully_read": "$nope"}), 404, "M_NOT_FOUND")
	if got := receiptsOf(t, db, roomID, bob.UserID); got["m.read/"] != two {
		t.Fatalf("a failed request moved the receipt: %v", got)
	}
	expectError(t, do(t, "POST", url, bob.AccessToken, map[string]any{"m.fully_read": 5}), 400, "M_BAD_JSON")
	expectError(t, do(t, "POST", url, bob.AccessToken, "nope"), 400, "M_NOT_JSON")
	expectError(t, do(t, "POST", url, carol.AccessToken, map[string]any{"m.fully_read": three}), 403, "M_FORBIDDEN")
	if r := do(t, "POST", url, bob.AccessToken, map[string]any{}); r.Status != 200 {
		t.Fatalf("empty read markers: %d %s", r.Status, r.Raw)
	}
}

func TestGuestsSendEphemeral(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, testserver.WithConfig(func(c *config.Config) { c.Registration.AllowGuests = true }))
	alice := registerUser(t, s, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, resp.RoomID, event.StateGuestAccess, "", map[string]any{"guest_access": "can_join"}); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, resp.RoomID, "welcome")
	if err != nil {
		t.Fatal(err)
	}
	guest := newClient(t, s)
	reg, _, err := guest.RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
	if err != nil {
		t.Fatal(err)
	}
	guest.SetCredentials(reg.UserID, reg.AccessToken)
	// Not joined yet: refused as a non-member, not as a guest.
	_, err = guest.UserTyping(ctx, resp.RoomID, true, time.Second)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	if _, err := guest.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := guest.UserTyping(ctx, resp.RoomID, true, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := guest.MarkRead(ctx, resp.RoomID, sent.EventID); err != nil {
		t.Fatal(err)
	}
	if err := guest.SetReadMarkers(ctx, resp.RoomID, &mautrix.ReqSetReadMarkers{FullyRead: sent.EventID}); err != nil {
		t.Fatal(err)
	}
}

// order is a tag's order, -1 when it has none.
func order(m event.TagMetadata) float64 {
	f, err := m.Order.Float64()
	if err != nil {
		return -1
	}
	return f
}

func TestTags(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	roomID, _ := sharedRoom(t, alice, bob)

	tags, err := alice.GetTags(ctx, roomID)
	if err != nil || tags.Tags == nil || len(tags.Tags) != 0 {
		t.Fatalf("tags before any = %+v, %v", tags, err)
	}
	if err := alice.AddTag(ctx, roomID, event.RoomTagFavourite, 0.25); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddTagWithCustomData(ctx, roomID, "u.work", map[string]any{"org.example.colour": "red"}); err != nil {
		t.Fatal(err)
	}
	tags, err = alice.GetTags(ctx, roomID)
	if err != nil || len(tags.Tags) != 2 || order(tags.Tags[event.RoomTagFavourite]) != 0.25 {
		t.Fatalf("tags = %+v, %v", tags, err)
	}
	var custom struct {
		Tags map[string]map[string]any `json:"tags"`
	}
	if err := alice.GetTagsWithCustomData(ctx, roomID, &custom); err != nil || custom.Tags["u.work"]["org.example.colour"] != "red" {
		t.Fatalf("custom tag data = %+v, %v", custom, err)
	}
	// Overwriting a tag replaces its data; the others stay.
	if err := alice.AddTag(ctx, roomID, event.RoomTagFavourite, 1); err != nil {
		t.Fatal(err)
	}
	// Tags are the m.tag room account data, which sync delivers.
	var content event.TagEventContent
	if err := alice.GetRoomAccountData(ctx, roomID, "m.tag", &content); err != nil || len(content.Tags) != 2 || order(content.Tags[event.RoomTagFavourite]) != 1 {
		t.Fatalf("m.tag = %+v, %v", content, err)
	}
	if err := alice.RemoveTag(ctx, roomID, "u.work"); err != nil {
		t.Fatal(err)
	}
	// Removing a tag the room does not have is fine.
	if err := alice.RemoveTag(ctx, roomID, "u.never"); err != nil {
		t.Fatal(err)
	}
	tags, err = alice.GetTags(ctx, roomID)
	if err != nil || len(tags.Tags) != 1 || order(tags.Tags[event.RoomTagFavourite]) != 1 {
		t.Fatalf("tags after removal = %+v, %v", tags, err)
	}
	// Bob sees none of them and cannot touch them.
	if tags, err := bob.GetTags(ctx, roomID); err != nil || len(tags.Tags) != 0 {
		t.Fatalf("bob's tags = %+v, %v", tags, err)
	}
	aliceTags := clientURL(s, "/user/"+string(alice.UserID)+"/rooms/"+string(roomID)+"/tags")
	expectError(t, do(t, "GET", aliceTags, bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "PUT", aliceTags+"/u.x", bob.AccessToken, map[string]any{}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "DELETE", aliceTags+"/m.favourite", bob.AccessToken, nil), 403, "M_FORBIDDEN")

	tok := alice.AccessToken
	expectError(t, do(t, "PUT", aliceTags+"/u.x", tok, map[string]any{"order": 1.5}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "PUT", aliceTags+"/u.x", tok, map[string]any{"order": -0.1}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "PUT", aliceTags+"/u.x", tok, map[string]any{"order": "0.5"}), 400, "M_BAD_JSON")
	expectError(t, do(t, "PUT", aliceTags+"/u.x", tok, `{"order": null}`), 400, "M_BAD_JSON")
	expectError(t, do(t, "PUT", aliceTags+"/u.x", tok, "[]"), 400, "M_NOT_JSON")
	expectError(t, do(t, "PUT", aliceTags+"/"+strings.Repeat("x", 256), tok, map[string]any{}), 400, "M_INVALID_PARAM")
	if r := do(t, "PUT", aliceTags+"/"+strings.Repeat("x", 255), tok, map[string]any{"order": 0}); r.Status != 200 {
		t.Fatalf("a 255-byte tag: %d %s", r.Status, r.Raw)
	}
	expectError(t, do(t, "GET", clientURL(s, "/user/"+string(alice.UserID)+"/rooms/not-a-room/tags"), tok, nil), 400, "M_INVALID_PARAM")
}

func TestIgnoredUserList(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	db := openDB(t, s)
	alice := registerUser(t, s, "alice")
	list := map[string]any{"ignored_users": map[string]any{"@bob:test.veche": map[string]any{}, "@eve:elsewhere.example": map[string]any{}}}
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", list); err != nil {
		t.Fatal(err)
	}
	ignored, err := db.IgnoredUsers(ctx, "alice")
	if err != nil || len(ignored) != 2 || !ignored["@bob:test.veche"] || !ignored["@eve:elsewhere.example"] {
		t.Fatalf("ignored = %v, %v", ignored, err)
	}
	url := clientURL(s, "/user/"+string(alice.UserID)+"/account_data/m.ignored_user_list")
	for _, bad := range []string{
		`{}`,
		`{"ignored_users": []}`,
		`{"ignored_users": null}`,
		`{"ignored_users": {"bob": {}}}`,
		`{"ignored_users": {"@bob:test.veche": true}}`,
	} {
		r := do(t, "PUT", url, alice.AccessToken, bad)
		if r.Status != 400 || r.errcode() != "M_BAD_JSON" {
			t.Errorf("%s: got %d %s", bad, r.Status, r.Raw)
		}
	}
	// The rejected writes left the list as it was.
	var got map[string]map[string]json.RawMessage
	if err := alice.GetAccountData(ctx, "m.ignored_user_list", &got); err != nil || len(got["ignored_users"]) != 2 {
		t.Fatalf("list after rejected writes = %v, %v", got, err)
	}
	// An empty list is valid: it ignores nobody.
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	if ignored, err := db.IgnoredUsers(ctx, "alice"); err != nil || len(ignored) != 0 {
		t.Fatalf("ignored = %v, %v", ignored, err)
	}
}
