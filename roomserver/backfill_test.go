package roomserver_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

func TestInputBackfill(t *testing.T) {
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

	// A remote room with history: create … hello (depths 1-5), then four
	// messages, and a redaction of the second.
	rr := newRemoteRoom(t)
	roomID, bob := rr.r.room, "@bob:remote.example"
	msg := func(body string, prev gomatrixserverlib.PDU) gomatrixserverlib.PDU {
		return rr.r.build(t, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body},
			[]string{prev.EventID()}, []string{rr.join.EventID(), rr.power.EventID()}, prev.Depth()+1)
	}
	h1 := msg("h1", rr.hello)
	h2 := msg("h2", h1)
	h3 := msg("h3", h2)
	h4 := msg("h4", h3)
	redaction := rr.r.build(t, bob, "m.room.redaction", nil, map[string]any{"redacts": h2.EventID()},
		[]string{h4.EventID()}, []string{rr.join.EventID(), rr.power.EventID()}, h4.Depth()+1)

	// Alice joins the way a send_join leaves things: the state as
	// outliers, her join on top, nothing of the history.
	state := []gomatrixserverlib.PDU{rr.create, rr.join, rr.power, rr.rules}
	var stateIDs []string
	for _, e := range state {
		stateIDs = append(stateIDs, e.EventID())
	}
	if _, err := rs.StoreOutliers(ctx, roomID, "12", state); err != nil {
		t.Fatal(err)
	}
	me := string(alice.UserID)
	join := rr.r.build(t, me, "m.room.member", str(me), map[string]any{"membership": "join"},
		[]string{redaction.EventID()}, []string{rr.power.EventID(), rr.rules.EventID()}, redaction.Depth()+1)
	if res, err := rs.InputWithState(ctx, roomID, join, stateIDs); err != nil || res.Status != roomserver.InputAccepted {
		t.Fatalf("join = %+v, %v", res, err)
	}
	room, err := rs.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	sync1, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	currentBefore := stateIDsOf(t, rs, room)

	// The newest part first. Its oldest event hangs off history we lack.
	batch := []gomatrixserverlib.PDU{redaction, h4, h3}
	var need *roomserver.NeedStateError
	if _, err := rs.InputBackfill(ctx, roomID, batch, nil); !errors.As(err, &need) || !slices.Equal(need.EventIDs, []string{h3.EventID()}) {
		t.Fatalf("backfill without the state = %v, want the state before h3 asked for", err)
	}
	results, err := rs.InputBackfill(ctx, roomID, batch, map[string][]string{h3.EventID(): stateIDs})
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range results {
		if res.Status != roomserver.InputAccepted {
			t.Fatalf("%s: %s %s", res.EventID, res.Status, res.Reason)
		}
	}
	pos := func(p gomatrixserverlib.PDU) int64 {
		t.Helper()
		e, err := rs.Event(ctx, p.EventID())
		if err != nil {
			t.Fatal(err)
		}
		return e.StreamPos
	}
	if !(pos(h3) < pos(h4) && pos(h4) < pos(redaction) && pos(redaction) < 0) {
		t.Fatalf("stream positions h3 %d, h4 %d, redaction %d: want increasing and negative", pos(h3), pos(h4), pos(redaction))
	}
	if before, err := rs.StateBefore(ctx, room, h4.EventID()); err != nil || len(before) != 4 {
		t.Fatalf("state before h4: %d events, %v", len(before), err)
	}

	// The rest: outliers of the join's state are promoted, and h2 gets
	// the redaction that arrived before it.
	results, err = rs.InputBackfill(ctx, roomID, []gomatrixserverlib.PDU{h2, h1, rr.hello, rr.rules, rr.power, rr.join, rr.create}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range results {
		if res.Status != roomserver.InputAccepted {
			t.Fatalf("%s: %s %s", res.EventID, res.Status, res.Reason)
		}
	}
	if !(pos(rr.create) < pos(rr.join) && pos(rr.rules) < pos(h2) && pos(h2) < pos(h3)) {
		t.Fatalf("second batch positions create %d, rules %d, h2 %d; h3 %d", pos(rr.create), pos(rr.rules), pos(h2), pos(h3))
	}
	if e, _ := rs.Event(ctx, h2.EventID()); e.RedactedBy != redaction.EventID() || len(e.Content()) > 2 {
		t.Fatalf("h2 after backfill: redacted by %q, content %s", e.RedactedBy, e.Content())
	}
	if res, err := rs.InputBackfill(ctx, roomID, []gomatrixserverlib.PDU{h1}, nil); err != nil || res[0].Status != roomserver.InputDuplicate {
		t.Fatalf("backfilling h1 again = %+v, %v", res, err)
	}

	// Events failing the auth rules are kept out of the history.
	mallory := rr.r.build(t, "@mallory:remote.example", "m.room.message", nil, map[string]any{"body": "hi"},
		[]string{h4.EventID()}, []string{rr.power.EventID()}, h4.Depth()+1)
	if res, err := rs.InputBackfill(ctx, roomID, []gomatrixserverlib.PDU{mallory}, nil); err != nil || res[0].Status != roomserver.InputRejected {
		t.Fatalf("mallory's message = %+v, %v", res, err)
	}
	if pos(mallory) != 0 {
		t.Fatal("a rejected event has a stream position")
	}
	orphan := rr.r.build(t, bob, "m.room.message", nil, map[string]any{"body": "?"},
		[]string{h1.EventID()}, []string{"$gone"}, h1.Depth()+1)
	var missing *roomserver.MissingEventsError
	if _, err := rs.InputBackfill(ctx, roomID, []gomatrixserverlib.PDU{orphan}, nil); !errors.As(err, &missing) || !slices.Equal(missing.Auth, []string{"$gone"}) {
		t.Fatalf("backfill with an unknown auth event = %v", err)
	}

	// The present is untouched.
	if ext, _ := rs.Extremities(ctx, room); !slices.Equal(ext, []string{join.EventID()}) {
		t.Fatalf("extremities %v, want the join", ext)
	}
	room, _ = rs.Room(ctx, roomID)
	if got := stateIDsOf(t, rs, room); !slices.Equal(got, currentBefore) {
		t.Fatalf("current state changed: %v, was %v", got, currentBefore)
	}
	sync2, err := alice.SyncRequest(ctx, 0, sync1.NextBatch, "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if jr, ok := sync2.Rooms.Join[id.RoomID(roomID)]; ok && len(jr.Timeline.Events) > 0 {
		t.Fatalf("sync reports backfilled history: %d events", len(jr.Timeline.Events))
	}

	// /messages shows it all, in order.
	msgs, err := alice.Messages(ctx, id.RoomID(roomID), "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range msgs.Chunk {
		got = append(got, string(e.ID))
	}
	var want []string
	for _, e := range []gomatrixserverlib.PDU{join, redaction, h4, h3, h2, h1, rr.hello, rr.rules, rr.power, rr.join, rr.create} {
		want = append(want, e.EventID())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("/messages: %v\nwant %v", got, want)
	}
	if msgs.End != "" {
		t.Fatalf("/messages goes on past the create event: %q", msgs.End)
	}
}

// stateIDsOf lists the event IDs of a room's current state, sorted.
func stateIDsOf(t *testing.T, rs *roomserver.Roomserver, room storage.Room) []string {
	t.Helper()
	state, err := rs.CurrentState(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range state {
		out = append(out, e.EventID())
	}
	slices.Sort(out)
	return out
}
