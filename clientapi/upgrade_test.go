package clientapi_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

func TestRoomUpgrade(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Old", Topic: "kept", Preset: "public_chat", RoomVersion: "10"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, old.RoomID); err != nil {
		t.Fatal(err)
	}
	upgrade := clientURL(s, "/rooms/"+string(old.RoomID)+"/upgrade")
	// A member without power cannot upgrade.
	expectError(t, do(t, "POST", upgrade, bob.AccessToken, map[string]any{"new_version": "12"}), 403, "M_FORBIDDEN")
	expectError(t, do(t, "POST", upgrade, alice.AccessToken, map[string]any{"new_version": "nope"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
	expectError(t, do(t, "POST", upgrade, alice.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")

	up := do(t, "POST", upgrade, alice.AccessToken, map[string]any{"new_version": "12"})
	if up.Status != 200 {
		t.Fatalf("upgrade = %d %s", up.Status, up.Raw)
	}
	newRoom := id.RoomID(up.Body["replacement_room"].(string))
	var tomb event.TombstoneEventContent
	if err := bob.StateEvent(ctx, old.RoomID, event.StateTombstone, "", &tomb); err != nil || tomb.ReplacementRoom != newRoom {
		t.Fatalf("tombstone = %+v, %v", tomb, err)
	}
	var create event.CreateEventContent
	if err := alice.StateEvent(ctx, newRoom, event.StateCreate, "", &create); err != nil || create.Predecessor == nil || create.Predecessor.RoomID != old.RoomID {
		t.Fatalf("create = %+v, %v", create, err)
	}
	var topic event.TopicEventContent
	if err := alice.StateEvent(ctx, newRoom, event.StateTopic, "", &topic); err != nil || topic.Topic != "kept" {
		t.Fatalf("topic not transferred: %+v, %v", topic, err)
	}
	// The old room is quieted; bob follows to the public new room.
	_, err = bob.SendText(ctx, old.RoomID, "still talking")
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	if _, err := bob.JoinRoomByID(ctx, newRoom); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctx, newRoom, "hello new room"); err != nil {
		t.Fatal(err)
	}
}

func TestRestrictedJoinAndKnock(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Team"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, space.RoomID); err != nil {
		t.Fatal(err)
	}
	restricted, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: []*event.Event{{
		Type: event.StateJoinRules,
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted",
			"allow": []any{map[string]any{"type": "m.room_membership", "room_id": string(space.RoomID)}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// Bob is in the allowed room; carol is not.
	if _, err := bob.JoinRoomByID(ctx, restricted.RoomID); err != nil {
		t.Fatal(err)
	}
	var member event.MemberEventContent
	if err := bob.StateEvent(ctx, restricted.RoomID, event.StateMember, string(bob.UserID), &member); err != nil ||
		member.JoinAuthorisedViaUsersServer != alice.UserID {
		t.Fatalf("restricted join lacks its authoriser: %+v, %v", member, err)
	}
	_, err = carol.JoinRoomByID(ctx, restricted.RoomID)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")

	knock, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: []*event.Event{{
		Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = carol.JoinRoomByID(ctx, knock.RoomID)
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
	if _, err := carol.KnockRoom(ctx, string(knock.RoomID), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil {
		t.Fatal(err)
	}
	sync, err := carol.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil || sync.Rooms.Knock[knock.RoomID] == nil {
		t.Fatalf("knock not in sync: %+v, %v", sync.Rooms.Knock, err)
	}
	if _, err := alice.InviteUser(ctx, knock.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, knock.RoomID); err != nil {
		t.Fatal(err)
	}
	// Knocking on an invite-only room is refused.
	private, _ := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	_, err = bob.KnockRoom(ctx, string(private.RoomID), &mautrix.ReqKnockRoom{})
	expectMatrixError(t, err, 403, "M_FORBIDDEN")
}
