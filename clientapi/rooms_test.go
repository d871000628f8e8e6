package clientapi_test

import (
	"strconv"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

func TestCreateJoinSendRead(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")

	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Lobby", Topic: "Hello", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := resp.RoomID
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, roomID, "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	got, err := bob.GetEvent(ctx, roomID, sent.EventID)
	if err != nil {
		t.Fatal(err)
	}
	_ = got.Content.ParseRaw(got.Type)
	if got.Content.AsMessage().Body != "hi bob" {
		t.Fatalf("event = %+v", got)
	}
	msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.Chunk) == 0 || msgs.Chunk[0].ID != sent.EventID {
		t.Fatalf("messages = %+v", msgs.Chunk)
	}
	var name event.RoomNameEventContent
	if err := bob.StateEvent(ctx, roomID, event.StateRoomName, "", &name); err != nil || name.Name != "Lobby" {
		t.Fatalf("name = %+v, %v", name, err)
	}
	joined, err := bob.JoinedRooms(ctx)
	if err != nil || len(joined.JoinedRooms) != 1 {
		t.Fatalf("joined rooms = %+v, %v", joined, err)
	}
	members, err := bob.JoinedMembers(ctx, roomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("joined members = %+v, %v", members, err)
	}
	t.Logf("room %s, %d events", roomID, len(msgs.Chunk))
}

func TestMembershipRules(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")

	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	// Invite-only: bob cannot walk in.
	_, err = bob.JoinRoomByID(ctx, room)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	// Non-members cannot send, read state or paginate.
	_, err = bob.SendText(ctx, room, "let me in")
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/state"), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/messages?dir=b"), bob.AccessToken, nil), 403, "M_FORBIDDEN")
	expectError(t, do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/members"), bob.AccessToken, nil), 403, "M_FORBIDDEN")

	// Bob (power 0) cannot invite: the default invite level is 0, so he can
	// once joined; carol is invited by alice instead.
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	_, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
	if err != nil {
		t.Fatalf("re-inviting an invited user: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	_, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
	expectMatrixError(t, err, 403, "M_FORBIDDEN") // already joined

	// Bob may not change the name (state_default 50) nor kick alice.
	_, err = bob.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "Bob's room"})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	_, err = bob.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: alice.UserID})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")

	// Ban, then the banned user can neither join nor be invited.
	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.JoinRoomByID(ctx, room)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	_, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	_, err = bob.SendText(ctx, room, "still here?")
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	// Unban (only of a banned user), invite again, join.
	_, err = alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: carol.UserID})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	// Kick, then forget only after leaving.
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}); err != nil {
		t.Fatal(err)
	}
	_, err = alice.ForgetRoom(ctx, room)
	expectMatrixError(t, err, 400, "M_UNKNOWN")
	if _, err := bob.ForgetRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	joined, _ := bob.JoinedRooms(ctx)
	if len(joined.JoinedRooms) != 0 {
		t.Fatalf("bob still in %v", joined.JoinedRooms)
	}
	// Leaving a room one is not in is refused.
	_, err = carol.LeaveRoom(ctx, room)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	// Unknown rooms and malformed IDs.
	_, err = carol.JoinRoomByID(ctx, "!nope:test.veche")
	expectMatrixError(t, err, 404, "M_NOT_FOUND")
	expectError(t, do(t, "POST", clientURL(s, "/rooms/not-a-room/join"), carol.AccessToken, map[string]any{}), 400, "M_INVALID_PARAM")
	expectError(t, do(t, "POST", clientURL(s, "/rooms/"+string(room)+"/invite"), alice.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")
	expectError(t, do(t, "POST", clientURL(s, "/rooms/"+string(room)+"/invite"), alice.AccessToken, map[string]any{"user_id": "@x:elsewhere.example"}), 502, "M_UNKNOWN")
}

func TestSendIdempotencyAndRedaction(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	url := clientURL(s, "/rooms/"+string(room)+"/send/m.room.message/txn-1")
	first := do(t, "PUT", url, bob.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
	again := do(t, "PUT", url, bob.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
	if first.Status != 200 || again.Body["event_id"] != first.Body["event_id"] {
		t.Fatalf("retried transaction = %s then %s", first.Raw, again.Raw)
	}
	// Another device's identical txn ID is a different transaction.
	other := login(t, s, "bob", testPassword)
	third := do(t, "PUT", url, other.AccessToken, map[string]any{"msgtype": "m.text", "body": "once"})
	if third.Body["event_id"] == first.Body["event_id"] {
		t.Fatal("transaction IDs leaked across devices")
	}
	evID := first.Body["event_id"].(string)
	// The sending device sees its transaction ID; others do not.
	ev := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/event/"+evID), bob.AccessToken, nil)
	if ev.Body["unsigned"].(map[string]any)["transaction_id"] != "txn-1" {
		t.Fatalf("sender's event lacks transaction_id: %s", ev.Raw)
	}
	ev = do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/event/"+evID), alice.AccessToken, nil)
	if _, ok := ev.Body["unsigned"].(map[string]any)["transaction_id"]; ok {
		t.Fatal("another user sees the transaction ID")
	}

	// Alice (moderator) redacts bob's message; bob cannot redact hers.
	mine, _ := alice.SendText(ctx, room, "admin note")
	_, err = bob.RedactEvent(ctx, room, mine.EventID)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.RedactEvent(ctx, room, id.EventID(evID), mautrix.ReqRedact{Reason: "off topic"}); err != nil {
		t.Fatal(err)
	}
	red := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/event/"+evID), bob.AccessToken, nil)
	if len(red.Body["content"].(map[string]any)) != 0 || red.Body["unsigned"].(map[string]any)["redacted_because"] == nil {
		t.Fatalf("redacted event = %s", red.Raw)
	}

	// Content must be an object; huge events are refused.
	expectError(t, do(t, "PUT", clientURL(s, "/rooms/"+string(room)+"/send/m.room.message/t2"), bob.AccessToken, `[1]`), 400, "M_NOT_JSON")
	big := map[string]any{"body": strings.Repeat("x", 70000)}
	expectError(t, do(t, "PUT", clientURL(s, "/rooms/"+string(room)+"/send/m.room.message/t3"), bob.AccessToken, big), 413, "M_TOO_LARGE")
}

func TestStateEndpointsAndPowerLevels(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat", Topic: "t",
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{bob.UserID: 50}},
	})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	// Bob has 50 through the override and may now set the topic.
	if _, err := bob.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "bob's topic"}); err != nil {
		t.Fatal(err)
	}
	// ... but not power levels (100).
	_, err = bob.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"users": map[string]int{string(bob.UserID): 100}})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	// Custom state keys, including ones with slashes.
	key := "a/b"
	if _, err := alice.SendStateEvent(ctx, room, event.Type{Type: "org.example.widget", Class: event.StateEventType}, key, map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	got := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/state/org.example.widget/a%2Fb"), bob.AccessToken, nil)
	if got.Status != 200 || got.Body["v"] != float64(1) {
		t.Fatalf("state with slash key = %d %s", got.Status, got.Raw)
	}
	expectError(t, do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/state/org.example.none/"), bob.AccessToken, nil), 404, "M_NOT_FOUND")
	all := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/state"), bob.AccessToken, nil)
	if all.Status != 200 || len(all.Raw) < 100 {
		t.Fatalf("full state = %d", all.Status)
	}
	// Re-sending identical state gives the same event.
	a := do(t, "PUT", clientURL(s, "/rooms/"+string(room)+"/state/m.room.topic/"), alice.AccessToken, map[string]any{"topic": "same"})
	b := do(t, "PUT", clientURL(s, "/rooms/"+string(room)+"/state/m.room.topic/"), alice.AccessToken, map[string]any{"topic": "same"})
	if a.Body["event_id"] == nil || a.Body["event_id"] != b.Body["event_id"] {
		t.Fatalf("duplicate state: %s vs %s", a.Raw, b.Raw)
	}
	// members with filters.
	members := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/members?membership=join"), bob.AccessToken, nil)
	if n := len(members.Body["chunk"].([]any)); n != 2 {
		t.Fatalf("joined members = %d", n)
	}
	none := do(t, "GET", clientURL(s, "/rooms/"+string(room)+"/members?not_membership=join"), bob.AccessToken, nil)
	if n := len(none.Body["chunk"].([]any)); n != 0 {
		t.Fatalf("non-joined members = %d", n)
	}
	// Room versions: unknown ones are refused; older ones work.
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "999"})
	expectMatrixError(t, err, 400, "M_UNSUPPORTED_ROOM_VERSION")
	for _, v := range []string{"1", "6", "10", "11"} {
		r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(v), Name: "v" + v})
		if err != nil {
			t.Fatalf("room version %s: %v", v, err)
		}
		if _, err := alice.SendText(ctx, r.RoomID, "hello v"+v); err != nil {
			t.Fatalf("sending in room version %s: %v", v, err)
		}
	}
}

func TestRestartKeepsRooms(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "durable"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for i := range 5 {
		r, err := alice.SendText(ctx, resp.RoomID, "m"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.EventID)
	}
	s.Restart()
	// Everything acknowledged is there, and the room keeps working.
	msgs, err := alice.Messages(ctx, resp.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.Chunk) < 5 || msgs.Chunk[0].ID != ids[4] {
		t.Fatalf("after restart: %d events, newest %s", len(msgs.Chunk), msgs.Chunk[0].ID)
	}
	if _, err := alice.SendText(ctx, resp.RoomID, "after restart"); err != nil {
		t.Fatal(err)
	}
	sync, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil || sync.Rooms.Join[resp.RoomID] == nil {
		t.Fatalf("sync after restart: %v", err)
	}
}

func TestProfileAndDeactivationReachRooms(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetDisplayName(ctx, "Robert"); err != nil {
		t.Fatal(err)
	}
	var m event.MemberEventContent
	if err := alice.StateEvent(ctx, room, event.StateMember, string(bob.UserID), &m); err != nil || m.Displayname != "Robert" {
		t.Fatalf("member event after rename = %+v, %v", m, err)
	}
	first := do(t, "POST", clientURL(s, "/account/deactivate"), bob.AccessToken, nil)
	ok := do(t, "POST", clientURL(s, "/account/deactivate"), bob.AccessToken,
		map[string]any{"auth": passwordAuth(first.Body["session"].(string), bob.UserID, testPassword)})
	if ok.Status != 200 {
		t.Fatalf("deactivate = %d %s", ok.Status, ok.Raw)
	}
	if err := alice.StateEvent(ctx, room, event.StateMember, string(bob.UserID), &m); err != nil || m.Membership != event.MembershipLeave {
		t.Fatalf("deactivated user's membership = %+v, %v", m, err)
	}
}

func TestRelationRulesOnSend(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	room := string(resp.RoomID)
	root, _ := alice.SendText(ctx, resp.RoomID, "root")
	send := func(txn string, content map[string]any) response {
		return do(t, "PUT", clientURL(s, "/rooms/"+room+"/send/m.reaction/"+txn), alice.AccessToken, content)
	}
	react := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": string(root.EventID), "key": "👍"}}
	if r := send("r1", react); r.Status != 200 {
		t.Fatalf("first reaction = %d %s", r.Status, r.Raw)
	}
	expectError(t, send("r2", react), 400, "M_DUPLICATE_ANNOTATION")
	other := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": string(root.EventID), "key": "🎉"}}
	if r := send("r3", other); r.Status != 200 {
		t.Fatalf("another key = %d %s", r.Status, r.Raw)
	}
	// A thread may not start from an event in a thread.
	reply := do(t, "PUT", clientURL(s, "/rooms/"+room+"/send/m.room.message/t1"), alice.AccessToken, map[string]any{
		"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": string(root.EventID)}})
	if reply.Status != 200 {
		t.Fatalf("thread reply = %d %s", reply.Status, reply.Raw)
	}
	expectError(t, do(t, "PUT", clientURL(s, "/rooms/"+room+"/send/m.room.message/t2"), alice.AccessToken, map[string]any{
		"msgtype": "m.text", "body": "nested", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": reply.Body["event_id"]}}), 400, "M_UNKNOWN")
}

func TestMembersAt(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := string(resp.RoomID)
	if _, err := bob.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	before, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, resp.RoomID); err != nil {
		t.Fatal(err)
	}
	now, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	joined := func(tok, token string) int {
		r := do(t, "GET", clientURL(s, "/rooms/"+room+"/members?membership=join&at="+token), tok, nil)
		if r.Status != 200 {
			t.Fatalf("members = %d %s", r.Status, r.Raw)
		}
		return len(r.Body["chunk"].([]any))
	}
	if n := joined(alice.AccessToken, before.NextBatch); n != 2 {
		t.Fatalf("joined at the earlier token = %d, want 2 (alice, bob)", n)
	}
	if n := joined(alice.AccessToken, now.NextBatch); n != 2 {
		t.Fatalf("joined now = %d, want 2 (alice, carol)", n)
	}
	// Bob left: a later token shows him nothing past his leave.
	r := do(t, "GET", clientURL(s, "/rooms/"+room+"/members?at="+now.NextBatch), bob.AccessToken, nil)
	for _, e := range r.Body["chunk"].([]any) {
		if e.(map[string]any)["state_key"] == string(carol.UserID) {
			t.Fatal("a former member sees who joined after they left")
		}
	}
	expectError(t, do(t, "GET", clientURL(s, "/rooms/"+room+"/members?at=bogus"), alice.AccessToken, nil), 400, "M_INVALID_PARAM")
}
