package roomserver_test

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
)

func TestServerVisibility(t *testing.T) {
	s := testserver.Start(t)
	rs := s.Roomserver()
	alice, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	alice.SetCredentials(reg.UserID, reg.AccessToken)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"history_visibility": "invited"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := string(created.RoomID)
	me := string(alice.UserID)
	carol := "@carol:third.example"
	r := newRemote(t, roomID)

	var tip gomatrixserverlib.PDU
	local := func(body string) gomatrixserverlib.PDU {
		t.Helper()
		resp, err := alice.SendText(ctx, created.RoomID, body)
		if err != nil {
			t.Fatal(err)
		}
		e, err := rs.Event(ctx, string(resp.EventID))
		if err != nil {
			t.Fatal(err)
		}
		tip = e.PDU
		return tip
	}
	// remote inputs an event built here with explicit auth events, as
	// another server would send it (input does not check signatures).
	remote := func(sender, typ string, stateKey *string, content map[string]any, auth ...string) gomatrixserverlib.PDU {
		t.Helper()
		ids := stateIDs(t, rs, roomID)
		authIDs := []string{ids["m.room.power_levels|"]}
		for _, a := range auth {
			authIDs = append(authIDs, ids[a])
		}
		e := r.build(t, sender, typ, stateKey, content, []string{tip.EventID()}, authIDs, tip.Depth()+1)
		res, err := rs.Input(ctx, roomID, []gomatrixserverlib.PDU{e})
		if err != nil || res[0].Status != roomserver.InputAccepted {
			t.Fatalf("%s: %+v, %v", typ, res, err)
		}
		tip = e
		return e
	}

	before := local("before the invite")
	invite := remote(me, "m.room.member", &carol, map[string]any{"membership": "invite"}, "m.room.member|"+me)
	between := local("between invite and join")
	join := remote(carol, "m.room.member", &carol, map[string]any{"membership": "join"}, "m.room.join_rules|", "m.room.member|"+carol)
	after := local("after the join")
	if _, err := alice.SendStateEvent(ctx, created.RoomID, event.StateHistoryVisibility, "", map[string]any{"history_visibility": "joined"}); err != nil {
		t.Fatal(err)
	}
	stillIn := local("joined only")
	leave := remote(carol, "m.room.member", &carol, map[string]any{"membership": "leave"}, "m.room.member|"+carol)
	gone := local("after carol left")

	room, err := rs.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		ev            gomatrixserverlib.PDU
		third, fourth bool
	}{
		{"before the invite", before, false, false},
		{"the invite", invite, true, false},
		{"invited", between, true, false},
		{"the join", join, true, false},
		{"joined", after, true, false},
		{"joined, history joined", stillIn, true, false},
		{"the leave", leave, true, false},
		{"after leaving", gone, false, false},
	}
	third := rs.ServerVisibility(room, "third.example")
	fourth := rs.ServerVisibility(room, "fourth.example")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := rs.Event(ctx, tt.ev.EventID())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				v    *roomserver.ServerVisibility
				want bool
			}{{third, tt.third}, {fourth, tt.fourth}} {
				if got, err := c.v.Visible(ctx, e); err != nil || got != c.want {
					t.Errorf("visible = %v, %v; want %v", got, err, c.want)
				}
			}
		})
	}

	var evs []*roomserver.Event
	for _, ev := range []gomatrixserverlib.PDU{before, between} {
		e, _ := rs.Event(ctx, ev.EventID())
		evs = append(evs, e)
	}
	filtered, err := third.Filter(ctx, evs, true)
	if err != nil || len(filtered) != 2 {
		t.Fatalf("filter: %d events, %v", len(filtered), err)
	}
	if string(filtered[0].Content()) != "{}" || !filtered[0].Redacted() || string(filtered[1].Content()) == "{}" {
		t.Fatalf("filtered contents %s, %s", filtered[0].Content(), filtered[1].Content())
	}
	if stored, _ := rs.Event(ctx, before.EventID()); stored.Redacted() {
		t.Fatal("redacting a copy changed the stored event")
	}
	if dropped, _ := third.Filter(ctx, evs, false); len(dropped) != 1 || dropped[0].EventID() != between.EventID() {
		t.Fatalf("filter without redaction kept %d events", len(dropped))
	}

	// Carol left: third.example is in the room only around her events.
	for _, c := range []struct {
		name string
		v    *roomserver.ServerVisibility
		at   gomatrixserverlib.PDU
		want bool
	}{
		{"third, at the join", third, join, true},
		{"third, at a message while joined", third, after, true},
		{"third, before joining", third, between, false},
		{"third, after leaving", third, gone, false},
		{"fourth", fourth, after, false},
	} {
		e, _ := rs.Event(ctx, c.at.EventID())
		if got, err := c.v.InRoomAt(ctx, []*roomserver.Event{e}); err != nil || got != c.want {
			t.Errorf("%s: in room = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if now, _ := third.InRoomNow(ctx); now {
		t.Error("third.example is in the room after carol left")
	}
}
