package federation_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// clientHierarchy calls the client API's /hierarchy as c; it returns the
// status and the rooms' IDs and names.
func clientHierarchy(t *testing.T, s *testserver.Server, c *mautrix.Client, roomID id.RoomID) (int, []string, map[string]string) {
	t.Helper()
	req, err := http.NewRequestWithContext(bg, "GET", s.URL+"/_matrix/client/v1/rooms/"+url.PathEscape(string(roomID))+"/hierarchy", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		return res.StatusCode, nil, nil
	}
	var body struct {
		Rooms []struct {
			RoomID           string `json:"room_id"`
			Name             string `json:"name"`
			NumJoinedMembers int    `json:"num_joined_members"`
		} `json:"rooms"`
		NextBatch string `json:"next_batch"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if body.NextBatch != "" {
		t.Fatalf("unexpected next page: %s", raw)
	}
	var ids []string
	names := map[string]string{}
	for _, r := range body.Rooms {
		ids = append(ids, r.RoomID)
		names[r.RoomID] = r.Name
		if r.NumJoinedMembers < 1 {
			t.Fatalf("%s: num_joined_members %d", r.RoomID, r.NumJoinedMembers)
		}
	}
	return 200, ids, names
}

func TestClientSpaceHierarchyAcrossServers(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	carol := user(t, a, "carol")
	bob := user(t, b, "bob")

	mk := func(c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		r, err := c.CreateRoom(bg, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	child := func(c *mautrix.Client, parent, room id.RoomID, server, order string) {
		t.Helper()
		content := map[string]any{"via": []string{server}, "order": order}
		if _, err := c.SendStateEvent(bg, parent, event.StateSpaceChild, string(room), content); err != nil {
			t.Fatal(err)
		}
	}
	spaceType := map[string]any{"type": "m.space"}

	// On b.test, which a.test knows nothing of yet: a room, and a space
	// with an open and a closed child.
	remoteRoom := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Remote room"})
	remoteSpace := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Remote space", CreationContent: spaceType})
	deep := mk(bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Deep"})
	closed := mk(bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Closed"})
	child(bob, remoteSpace, deep, "b.test", "a")
	child(bob, remoteSpace, closed, "b.test", "b")

	// Alice's space on a.test names them.
	space := mk(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Home", CreationContent: spaceType})
	child(alice, space, remoteRoom, "b.test", "a")
	child(alice, space, remoteSpace, "b.test", "b")

	status, ids, names := clientHierarchy(t, a, alice, space)
	want := []string{string(space), string(remoteRoom), string(remoteSpace), string(deep)}
	if status != 200 || !slices.Equal(ids, want) {
		t.Fatalf("hierarchy across servers: %d %v, want %v", status, ids, want)
	}
	if names[string(remoteRoom)] != "Remote room" || names[string(deep)] != "Deep" {
		t.Fatalf("names of remote rooms: %v", names)
	}

	// A private space on b.test: its root is asked of whoever invited the
	// user (a room ID of version 12 names no server); anyone else is
	// refused.
	hidden := mk(bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Hidden", CreationContent: spaceType})
	child(bob, hidden, deep, "b.test", "a")
	if _, err := bob.InviteUser(bg, hidden, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
		t.Fatal(err)
	}
	status, ids, _ = clientHierarchy(t, a, alice, hidden)
	if want := []string{string(hidden), string(deep)}; status != 200 || !slices.Equal(ids, want) {
		t.Fatalf("invited to a remote space: %d %v, want %v", status, ids, want)
	}
	if status, _, _ := clientHierarchy(t, a, carol, hidden); status != 403 {
		t.Fatalf("a remote private space: %d, want 403", status)
	}
}
