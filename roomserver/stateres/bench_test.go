package stateres

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// largeRoomForks builds a public room with members joined users and two forks
// that disagree on a handful of state events: topic, name, power levels, a
// ban, a kick and some joins.
func largeRoomForks(tb testing.TB, ver gomatrixserverlib.RoomVersion, members int) (*testRoom, [][]gomatrixserverlib.PDU) {
	tb.Helper()
	r, base := standardRoom(tb, ver)
	user := func(i int) string { return fmt.Sprintf("@user%04d:example.org", i) }
	for i := 0; i < members; i++ {
		r.join(base, user(i))
	}
	a, b := base.fork(), base.fork()

	r.topic(a, "topic A", creator, "A")
	r.powerLevels(a, "pl2", creator, map[string]int64{alice: 50, user(1): 50})
	r.member(a, "creator bans user10", creator, user(10), spec.Ban)
	r.send(a, "name A", creator, "m.room.name", "", map[string]any{"name": "A"})

	r.topic(b, "topic B", alice, "B")
	r.member(b, "alice kicks user20", alice, user(20), spec.Leave)
	for i := members; i < members+5; i++ {
		r.join(b, user(i))
	}
	r.send(b, "avatar B", creator, "m.room.avatar", "", map[string]any{"url": "mxc://example.org/b"})
	return r, sets(a, b)
}

func BenchmarkResolveTwoForks2000Members(b *testing.B) {
	for _, ver := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12} {
		b.Run("v"+string(ver), func(b *testing.B) {
			r, stateSets := largeRoomForks(b, ver, 2000)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := Resolve(ctx, r.ver, stateSets, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLargeRoomForks checks the benchmark's input resolves to what the spec
// says, so that the figure measures a correct resolution.
func TestLargeRoomForks(t *testing.T) {
	for _, ver := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12} {
		t.Run("v"+string(ver), func(t *testing.T) {
			r, stateSets := largeRoomForks(t, ver, 200)
			got, err := Resolve(context.Background(), r.ver, stateSets, r)
			if err != nil {
				t.Fatal(err)
			}
			byKey := toMap(got)
			checks := map[stateKey]string{
				{"m.room.topic", ""}:                        "topic B",
				{"m.room.name", ""}:                         "name A",
				{"m.room.avatar", ""}:                       "avatar B",
				{spec.MRoomPowerLevels, ""}:                 "pl2",
				{spec.MRoomMember, "@user0010:example.org"}: "creator bans user10",
				{spec.MRoomMember, "@user0020:example.org"}: "alice kicks user20",
				{spec.MRoomMember, "@user0204:example.org"}: "join @user0204:example.org",
				{spec.MRoomMember, "@user0100:example.org"}: "join @user0100:example.org",
			}
			for k, want := range checks {
				ev, ok := byKey[k]
				if !ok {
					t.Errorf("%v missing", k)
					continue
				}
				if got := r.label(ev); got != want {
					t.Errorf("%v = %s, want %s", k, got, want)
				}
			}
			// create, join rules, power levels, three members of
			// standardRoom, the users, the late joiners, topic, name, avatar.
			if want := 3 + 3 + 200 + 5 + 3; len(got) != want {
				t.Errorf("got %d state events, want %d", len(got), want)
			}
			assertOrderIndependent(t, r, stateSets, got)
		})
	}
}

// BenchmarkGomatrixserverlibResolveConflicts2000Members gives a reference
// figure for the library's v2 resolver on the same input, with the auth
// events handed over up front as its API requires.
func BenchmarkGomatrixserverlibResolveConflicts2000Members(b *testing.B) {
	for _, ver := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12} {
		b.Run("v"+string(ver), func(b *testing.B) {
			r, stateSets := largeRoomForks(b, ver, 2000)
			var flat []gomatrixserverlib.PDU
			for _, set := range stateSets {
				flat = append(flat, set...)
			}
			authEvents := slices.Collect(maps.Values(r.events))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := gomatrixserverlib.ResolveConflicts(ver, flat, authEvents, userIDForSender, r.IsRejected); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
