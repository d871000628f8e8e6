package roomserver_test

import (
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/veche/veche/internal/testserver"
	"github.com/veche/veche/roomserver"
)

// BenchmarkInputRemoteMessage inputs messages from another server into a
// joined room of 2000 members, each extending the room's tip: the cost
// must not grow with the size of the room's state.
func BenchmarkInputRemoteMessage(b *testing.B) {
	t := b // the room builders take a testing.TB
	s := testserver.Start(b)
	rs := s.Roomserver()
	rr := newRemoteRoom(t)
	bob := "@bob:remote.example"
	state := []gomatrixserverlib.PDU{rr.create, rr.join, rr.power, rr.rules}
	prev, depth := rr.rules.EventID(), int64(5)
	for i := range 2000 {
		u := fmt.Sprintf("@u%d:remote.example", i)
		j := rr.r.build(t, u, "m.room.member", str(u), map[string]any{"membership": "join"},
			[]string{prev}, []string{rr.power.EventID(), rr.rules.EventID()}, depth)
		state = append(state, j)
		prev, depth = j.EventID(), depth+1
	}
	if _, err := rs.StoreOutliers(ctx, rr.r.room, "12", state[:len(state)-1]); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, len(state)-1)
	for _, e := range state[:len(state)-1] {
		ids = append(ids, e.EventID())
	}
	last := state[len(state)-1]
	if res, err := rs.InputWithState(ctx, rr.r.room, last, ids); err != nil || res.Status != roomserver.InputAccepted {
		b.Fatalf("%+v %v", res, err)
	}
	msgs := make([]gomatrixserverlib.PDU, b.N)
	for i := range msgs {
		msgs[i] = rr.r.build(t, bob, "m.room.message", nil, map[string]any{"body": fmt.Sprint(i)},
			[]string{prev}, []string{rr.join.EventID(), rr.power.EventID()}, depth)
		prev, depth = msgs[i].EventID(), depth+1
	}
	b.ResetTimer()
	for i := range b.N {
		res, err := rs.Input(ctx, rr.r.room, msgs[i:i+1])
		if err != nil || res[0].Status != roomserver.InputAccepted {
			b.Fatalf("%+v %v", res, err)
		}
	}
}
