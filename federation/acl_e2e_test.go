package federation_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/federation"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
)

func TestCheckACL(t *testing.T) {
	t.Parallel()
	s := testserver.StartFederation(t, []string{"a.test"})[0]
	createUser(t, s, "alice", "Alice")
	rs := s.Roomserver()
	plain, err := rs.CreateRoom(ctx, roomserver.CreateRoomRequest{Creator: "@alice:a.test", Preset: roomserver.PresetPrivateChat})
	if err != nil {
		t.Fatal(err)
	}
	guarded, err := rs.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator: "@alice:a.test", Preset: roomserver.PresetPrivateChat,
		InitialState: []roomserver.StateEvent{{Type: "m.room.server_acl", Content: json.RawMessage(`{"allow":["*"],"deny":["evil.test"]}`)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := s.Federation()
	check := func(roomID, origin string, wantDenied bool) {
		t.Helper()
		err := federation.CheckACL(f, ctx, roomID, spec.ServerName(origin))
		switch {
		case wantDenied && !errors.Is(err, mxerr.Forbidden("")):
			t.Errorf("%s in %s: %v, want M_FORBIDDEN", origin, roomID, err)
		case !wantDenied && err != nil:
			t.Errorf("%s in %s: %v, want allowed", origin, roomID, err)
		}
	}
	check(plain, "evil.test", false)
	check("!unknown:a.test", "evil.test", false)
	check(guarded, "evil.test", true)
	check(guarded, "evil.test:8448", true)
	check(guarded, "good.test", false)

	// A new ACL takes effect at once.
	empty := ""
	if _, err := rs.Send(ctx, guarded, roomserver.Build{
		Sender: "@alice:a.test", Type: "m.room.server_acl", StateKey: &empty,
		Content: json.RawMessage(`{"allow":["*"],"deny":["evil.test","good.test"]}`),
	}); err != nil {
		t.Fatal(err)
	}
	check(guarded, "good.test", true)
	check(guarded, "other.test", false)
}
