package clientapi_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

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
