package syncapi_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/internal/testserver"
)

// BenchmarkInitialSync50Rooms is the initial /sync of a user in 50 rooms
// with 20 messages of history each: the start-up cost every client pays.
func BenchmarkInitialSync50Rooms(b *testing.B) {
	s := testserver.Start(b)
	owner := registerB(b, s, "owner")
	reader := registerB(b, s, "reader")
	for i := range 50 {
		room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("room %d", i)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := reader.JoinRoomByID(ctx, room.RoomID); err != nil {
			b.Fatal(err)
		}
		for j := range 20 {
			if _, err := owner.SendText(ctx, room.RoomID, fmt.Sprintf("message %d", j)); err != nil {
				b.Fatal(err)
			}
		}
	}
	url := s.URL + "/_matrix/client/v3/sync"
	client := &http.Client{}
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+reader.AccessToken)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("sync: %v %v", res, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

func registerB(b *testing.B, s *testserver.Server, name string) *mautrix.Client {
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: password})
	if err != nil {
		b.Fatal(err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	return cli
}
