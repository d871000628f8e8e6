package syncapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

var ctx = context.Background()

const password = "correct horse battery"

func register(t *testing.T, s *testserver.Server, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.DefaultHTTPRetries = 0
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

func TestSmoke(t *testing.T) {
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "x", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", resp.Rooms.Invite[room.RoomID])
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	resp2, err := bob.SyncRequest(ctx, 30000, resp.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	jr := resp2.Rooms.Join[room.RoomID]
	t.Logf("join: timeline %d state %d limited %v", len(jr.Timeline.Events), len(jr.State.Events), jr.Timeline.Limited)
	done := make(chan *mautrix.RespSync)
	go func() {
		r, err := bob.SyncRequest(ctx, 30000, resp2.NextBatch, "", false, "")
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	if _, err := alice.SendText(ctx, room.RoomID, "hello"); err != nil {
		t.Fatal(err)
	}
	r3 := <-done
	t.Logf("incremental: %d events", len(r3.Rooms.Join[room.RoomID].Timeline.Events))
}
