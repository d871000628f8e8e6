package stateres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

var (
	allVersions = []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12}
	v21Versions = []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV12}
)

type resolveCase struct {
	name     string
	versions []gomatrixserverlib.RoomVersion
	// build returns the room, the state sets to resolve and the full state
	// expected back.
	build func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU)
}

func sets(bs ...*branch) [][]gomatrixserverlib.PDU {
	out := make([][]gomatrixserverlib.PDU, len(bs))
	for i, b := range bs {
		out[i] = b.list()
	}
	return out
}

var resolveCases = []resolveCase{
	{
		name:     "identical state sets resolve to that state",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			r.topic(base, "topic", creator, "hello")
			return r, sets(base, base.fork(), base.fork()), expect(base)
		},
	},
	{
		name:     "a single state set is returned as is",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			return r, sets(base), expect(base)
		},
	},
	{
		name:     "topic: the event citing the resolved power levels wins over a later timestamp",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			r.topic(b, "topic B (cites pl1, clock far ahead)", creator, "B", at(r.clock+1_000_000))
			r.powerLevels(a, "pl2", creator, map[string]int64{alice: 60})
			r.topic(a, "topic A (cites pl2)", creator, "A")
			// The mainline is pl2, pl1: topic B joins it further back.
			return r, sets(a, b), expect(a)
		},
	},
	{
		name:     "topic: unconflicted power levels give v2 a mainline, v2.1 none",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			tb := r.topic(b, "topic B (cites pl1, clock far ahead)", creator, "B", at(r.clock+1_000_000))
			pl2 := r.powerLevels(a, "pl2", creator, map[string]int64{alice: 60})
			ta := r.topic(a, "topic A (cites pl2)", creator, "A")
			b.apply(pl2)
			// v2 starts from the unconflicted state, so pl2 heads the
			// mainline and topic A joins it later. v2.1 starts from nothing
			// and no conflicted power levels are resolved, so there is no
			// mainline and the timestamp decides.
			if gomatrixserverlib.MustGetRoomVersion(ver).StateResAlgorithm() == gomatrixserverlib.StateResV2_1 {
				return r, sets(a, b), expect(a, tb)
			}
			return r, sets(a, b), expect(a, ta)
		},
	},
	{
		name:     "topic: same mainline position, the later timestamp wins",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			now := r.clock
			ta := r.topic(a, "topic A (later)", alice, "A", at(now+5000))
			r.topic(b, "topic B (earlier)", creator, "B", at(now+4000))
			return r, sets(a, b), expect(base, ta)
		},
	},
	{
		name:     "topic: same mainline position and timestamp, the larger event ID wins",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			now := r.clock + 5000
			ta := r.topic(a, "topic A", creator, "A", at(now))
			tb := r.topic(b, "topic B", creator, "B", at(now))
			winner := ta
			if tb.EventID() > ta.EventID() {
				winner = tb
			}
			return r, sets(a, b), expect(base, winner)
		},
	},
	{
		name:     "creator's conflicting topics: the later one wins",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r := newTestRoom(t, ver)
			b := r.create(nil)
			r.join(b, creator)
			r.powerLevels(b, "pl1", creator, nil)
			r.joinRules(b, "invite-only", spec.Invite)
			x, y := b.fork(), b.fork()
			r.topic(x, "topic X (earlier)", creator, "X")
			ty := r.topic(y, "topic Y (later)", creator, "Y")
			return r, sets(x, y), expect(b, ty)
		},
	},
	{
		name:     "power levels are applied first and invalidate a racing ban",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			now := r.clock
			// The ban is older, so only the sender's power puts the
			// demotion first.
			r.member(b, "alice bans bob", alice, bob, spec.Ban, at(now+500))
			pl2 := r.powerLevels(a, "pl2 demotes alice", creator, map[string]int64{alice: 0}, at(now+5000))
			return r, sets(a, b), expect(base, pl2)
		},
	},
	{
		name:     "an event failing auth against the partially resolved state is dropped, the previous value kept",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			r.topic(base, "topic 0", creator, "original")
			a, b := base.fork(), base.fork()
			pl2 := r.powerLevels(a, "pl2 demotes alice", creator, map[string]int64{alice: 0})
			r.topic(b, "alice's topic", alice, "hijacked", at(r.clock+60_000))
			return r, sets(a, b), expect(base, pl2)
		},
	},
	{
		name:     "a rejected conflicted event is ignored",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b := base.fork(), base.fork()
			ta := r.topic(a, "topic A", creator, "A")
			r.topic(b, "topic B (rejected, later)", creator, "B", at(r.clock+60_000), rejected())
			return r, sets(a, b), expect(base, ta)
		},
	},
	{
		name:     "a rejected auth event is not used to authorise",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			r.rejected[base.state[stateKey{spec.MRoomMember, bob}].EventID()] = true
			r.send(base, "pl2 lets anyone set the topic", creator, spec.MRoomPowerLevels, "", map[string]any{
				"users":         plUsers(ver, map[string]int64{alice: 50}),
				"events":        map[string]int64{"m.room.topic": 0},
				"state_default": 50,
			})
			a, b := base.fork(), base.fork()
			ta := r.topic(a, "creator's topic", creator, "A")
			r.topic(b, "bob's topic (later)", bob, "B", at(r.clock+60_000))
			return r, sets(a, b), expect(base, ta)
		},
	},
	{
		name:     "conflicted state subgraph: v2 resets power levels, v2.1 keeps the chain between the conflicted events",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r := newTestRoom(t, ver)
			b := r.create(nil)
			r.join(b, creator)
			pl1 := r.powerLevels(b, "pl1", creator, nil)
			r.joinRules(b, "public", spec.Public)
			r.join(b, alice)
			r.powerLevels(b, "pl2 promotes alice", creator, map[string]int64{alice: 100})
			r.join(b, bob) // cites pl2, so pl2 is in both auth chains
			reset := b.fork().apply(pl1)
			r.powerLevels(b, "pl3 by alice", alice, map[string]int64{alice: 100, bob: 50})
			// pl3 → pl2 → pl1 is the path between the conflicted pl1 and pl3.
			// Without pl2, pl3 is checked against pl1, where alice has no power.
			if gomatrixserverlib.MustGetRoomVersion(ver).StateResAlgorithm() == gomatrixserverlib.StateResV2_1 {
				return r, sets(reset, b), expect(b)
			}
			return r, sets(reset, b), expect(reset)
		},
	},
	{
		name:     "reverse topological order only follows auth links between the sorted events",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r := newTestRoom(t, ver)
			b := r.create(nil)
			r.join(b, creator)
			pl := func(label, sender string, users map[string]int64) gomatrixserverlib.PDU {
				return r.send(b, label, sender, spec.MRoomPowerLevels, "", map[string]any{
					"users":  plUsers(ver, users),
					"events": map[string]int64{spec.MRoomPowerLevels: 50},
				})
			}
			pl("pl0", creator, map[string]int64{bob: 60})
			r.joinRules(b, "public", spec.Public)
			r.join(b, alice) // cites pl0
			r.join(b, bob)
			r.topic(b, "alice's topic", alice, "hi") // keeps alice's join out of the auth difference
			pl1 := pl("pl1 by bob", bob, map[string]int64{bob: 60, charlie: 10})
			pl("pl2 promotes alice", creator, map[string]int64{alice: 100, bob: 60, charlie: 10})
			r.join(b, charlie) // cites pl2, which is then in every auth chain
			reset := b.fork().apply(pl1)
			r.powerLevels(b, "pl3 by alice", alice, map[string]int64{alice: 100, bob: 60, charlie: 20})
			// In v2 only pl2, outside the sorted set, links pl3 to pl1, so
			// alice's pl3 (level 100) sorts before bob's pl1 (level 60) and
			// wins, as in Synapse and Ruma; following that indirect path
			// would give pl1. In v2.1 pl2 is in the conflicted subgraph.
			return r, sets(reset, b), expect(b)
		},
	},
	{
		name:     "unconflicted state is re-applied at the end",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r := newTestRoom(t, ver)
			base := r.create(nil)
			r.join(base, creator)
			r.powerLevels(base, "pl1", creator, nil)
			r.joinRules(base, "jr1 public", spec.Public)
			a, b := base.fork(), base.fork()
			cj := r.join(b, charlie) // cites jr1, which only fork b's auth chain holds
			jr2 := r.joinRules(a, "jr2 invite", spec.Invite)
			b.apply(jr2)
			// jr1 is in the auth difference and is applied during the
			// resolution (it is what lets charlie's join pass), yet the
			// unconflicted jr2 must be what remains.
			return r, sets(a, b), expect(a, cj)
		},
	},
	{
		name:     "v12 additional creators outrank every power level in the ordering",
		versions: v21Versions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r := newTestRoom(t, ver)
			base := r.create(map[string]any{"additional_creators": []string{dave}})
			r.join(base, creator)
			r.powerLevels(base, "pl1", creator, map[string]int64{alice: 100})
			r.joinRules(base, "public", spec.Public)
			r.join(base, alice)
			r.join(base, bob)
			r.join(base, dave)
			a, b := base.fork(), base.fork()
			now := r.clock
			r.member(b, "alice bans bob", alice, bob, spec.Ban, at(now+500))
			kick := r.member(a, "dave kicks alice", dave, alice, spec.Leave, at(now+5000))
			// Were dave's level read from pl1 (0), alice's older ban would be
			// applied first and bob would end up banned.
			return r, sets(a, b), expect(base, kick)
		},
	},
	{
		name:     "three forks",
		versions: allVersions,
		build: func(t testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, [][]gomatrixserverlib.PDU, []gomatrixserverlib.PDU) {
			r, base := standardRoom(t, ver)
			a, b, c := base.fork(), base.fork(), base.fork()
			r.topic(a, "topic A", creator, "A")
			pl2 := r.powerLevels(b, "pl2 demotes alice", creator, map[string]int64{alice: 0})
			r.member(c, "alice kicks bob", alice, bob, spec.Leave)
			tc := r.topic(c, "topic C", creator, "C")
			return r, sets(a, b, c), expect(base, pl2, tc)
		},
	},
}

// plUsers is the users map of a power levels event: from v12 the creator is
// implicit and must not be listed.
func plUsers(ver gomatrixserverlib.RoomVersion, users map[string]int64) map[string]int64 {
	out := map[string]int64{}
	if !gomatrixserverlib.MustGetRoomVersion(ver).PrivilegedCreators() {
		out[creator] = 100
	}
	for u, l := range users {
		out[u] = l
	}
	return out
}

func TestResolve(t *testing.T) {
	for _, tc := range resolveCases {
		for _, ver := range tc.versions {
			t.Run(tc.name+"/v"+string(ver), func(t *testing.T) {
				r, stateSets, want := tc.build(t, ver)
				got, err := Resolve(context.Background(), r.ver, stateSets, r)
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if g, w := r.describe(got), r.describe(want); g != w {
					t.Fatalf("resolved state mismatch\n--- got\n%s\n--- want\n%s", g, w)
				}
				if !slices.IsSortedFunc(got, compareKeys) {
					t.Errorf("result is not sorted by (type, state_key)")
				}
				assertOrderIndependent(t, r, stateSets, got)
			})
		}
	}
}

func compareKeys(a, b gomatrixserverlib.PDU) int {
	if a.Type() != b.Type() {
		if a.Type() < b.Type() {
			return -1
		}
		return 1
	}
	switch {
	case *a.StateKey() < *b.StateKey():
		return -1
	case *a.StateKey() > *b.StateKey():
		return 1
	}
	return 0
}

// assertOrderIndependent resolves again with the sets and the events in
// them reordered and requires exactly the same output.
func assertOrderIndependent(t *testing.T, r *testRoom, stateSets [][]gomatrixserverlib.PDU, want []gomatrixserverlib.PDU) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 8; i++ {
		perm := make([][]gomatrixserverlib.PDU, len(stateSets))
		for j, set := range stateSets {
			perm[j] = slices.Clone(set)
			rng.Shuffle(len(perm[j]), func(a, b int) { perm[j][a], perm[j][b] = perm[j][b], perm[j][a] })
		}
		if i%2 == 1 {
			slices.Reverse(perm)
		} else {
			rng.Shuffle(len(perm), func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
		}
		got, err := Resolve(context.Background(), r.ver, perm, r)
		if err != nil {
			t.Fatalf("Resolve (permutation %d): %v", i, err)
		}
		if !slices.EqualFunc(got, want, func(a, b gomatrixserverlib.PDU) bool { return a.EventID() == b.EventID() }) {
			t.Fatalf("permutation %d changed the result\n--- got\n%s\n--- want\n%s", i, r.describe(got), r.describe(want))
		}
	}
}

func TestResolveRoomVersion1DelegatesToGomatrixserverlib(t *testing.T) {
	r, base := standardRoom(t, gomatrixserverlib.RoomVersionV1)
	a, b := base.fork(), base.fork()
	r.topic(a, "topic A", creator, "A")
	r.topic(b, "topic B", creator, "B")
	r.send(b, "name B", creator, "m.room.name", "", map[string]any{"name": "B"})
	stateSets := sets(a, b)

	got, err := Resolve(context.Background(), r.ver, stateSets, r)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	var flat []gomatrixserverlib.PDU
	for _, set := range stateSets {
		flat = append(flat, set...)
	}
	lib, err := gomatrixserverlib.ResolveConflicts(gomatrixserverlib.RoomVersionV1, flat, slices.Collect(maps.Values(r.events)), userIDForSender, r.IsRejected)
	if err != nil {
		t.Fatalf("gomatrixserverlib.ResolveConflicts: %v", err)
	}
	if g, w := r.describe(got), r.describe(lib); g != w {
		t.Fatalf("v1 result differs from gomatrixserverlib\n--- got\n%s\n--- gomatrixserverlib\n%s", g, w)
	}
	assertOrderIndependent(t, r, stateSets, got)
}

type failingLoader struct {
	*testRoom
	events func(ids []string) (map[string]gomatrixserverlib.PDU, error)
}

func (l failingLoader) Events(_ context.Context, ids []string) (map[string]gomatrixserverlib.PDU, error) {
	return l.events(ids)
}

func TestResolveErrors(t *testing.T) {
	r, base := standardRoom(t, gomatrixserverlib.RoomVersionV12)
	// pl1 is then only reachable through the loader.
	r.powerLevels(base, "pl2", creator, map[string]int64{alice: 60})
	a, b := base.fork(), base.fork()
	r.topic(a, "topic A", creator, "A")
	r.topic(b, "topic B", creator, "B")
	conflicting := sets(a, b)
	ctx := context.Background()

	other := newTestRoom(t, gomatrixserverlib.RoomVersionV12)
	other.clock += 12345 // a different create event, hence a different room
	otherBase := other.create(nil)
	other.join(otherBase, creator)

	withoutCreate := func(set []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
		return slices.DeleteFunc(slices.Clone(set), func(ev gomatrixserverlib.PDU) bool { return ev.Type() == spec.MRoomCreate })
	}

	tests := []struct {
		name    string
		ctx     context.Context
		version gomatrixserverlib.IRoomVersion
		sets    [][]gomatrixserverlib.PDU
		loader  EventLoader
		check   func(error) bool
	}{
		{name: "nil version", version: nil, sets: conflicting, loader: r},
		{name: "nil loader", version: r.ver, sets: conflicting, loader: nil},
		{name: "pseudo-ID rooms", version: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionPseudoIDs), sets: conflicting, loader: r},
		{name: "wrong room version", version: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11), sets: conflicting, loader: r},
		{name: "events from two rooms", version: r.ver, sets: [][]gomatrixserverlib.PDU{a.list(), otherBase.list()}, loader: r},
		{name: "two events for one key in a set", version: r.ver, sets: [][]gomatrixserverlib.PDU{append(a.list(), b.state[stateKey{"m.room.topic", ""}]), b.list()}, loader: r},
		{name: "nil event", version: r.ver, sets: [][]gomatrixserverlib.PDU{append(a.list(), nil)}, loader: r},
		{
			name: "create event unreachable", version: r.ver,
			sets: [][]gomatrixserverlib.PDU{withoutCreate(a.list()), withoutCreate(b.list())},
			loader: failingLoader{r, func([]string) (map[string]gomatrixserverlib.PDU, error) {
				return nil, nil
			}},
			check: func(err error) bool { return errors.Is(err, ErrMissingCreateEvent) },
		},
		{
			name: "loader error", version: r.ver, sets: conflicting,
			loader: failingLoader{r, func([]string) (map[string]gomatrixserverlib.PDU, error) {
				return nil, errors.New("database is down")
			}},
		},
		{
			name: "loader returns the wrong event", version: r.ver, sets: conflicting,
			loader: failingLoader{r, func(ids []string) (map[string]gomatrixserverlib.PDU, error) {
				out := map[string]gomatrixserverlib.PDU{}
				for _, id := range ids {
					out[id] = a.state[stateKey{"m.room.topic", ""}]
				}
				return out, nil
			}},
		},
		{
			name: "loader panics", version: r.ver, sets: conflicting,
			loader: failingLoader{r, func([]string) (map[string]gomatrixserverlib.PDU, error) {
				panic("boom")
			}},
			check: func(err error) bool {
				var pe *PanicError
				return errors.As(err, &pe)
			},
		},
		{
			name: "cancelled context", version: r.ver, sets: conflicting, loader: r,
			ctx: func() context.Context {
				c, cancel := context.WithCancel(ctx)
				cancel()
				return c
			}(),
			check: func(err error) bool { return errors.Is(err, context.Canceled) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.ctx
			if c == nil {
				c = ctx
			}
			got, err := Resolve(c, tt.version, tt.sets, tt.loader)
			if err == nil {
				t.Fatalf("expected an error, got state\n%s", r.describe(got))
			}
			if tt.check != nil && !tt.check(err) {
				t.Fatalf("unexpected error: %v", err)
			}
		})
	}
}

func TestResolveNoStateSets(t *testing.T) {
	got, err := Resolve(context.Background(), gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11), nil, newTestRoom(t, gomatrixserverlib.RoomVersionV11))
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want empty state", got, err)
	}
}

func TestUserIDForSenderNeverNil(t *testing.T) {
	for _, s := range []string{"@alice:example.org", "@é:example.org", "@😀:example.org", "alice", "@:example.org", "@alice", ""} {
		u, err := userIDForSender(spec.RoomID{}, spec.SenderID(s))
		if u == nil && err == nil {
			t.Errorf("%q: got (nil, nil)", s)
		}
		if u != nil && u.Domain() != "example.org" {
			t.Errorf("%q: domain %q", s, u.Domain())
		}
	}
}

func TestResolveToleratesMissingAuthEvents(t *testing.T) {
	for _, ver := range allVersions {
		t.Run("v"+string(ver), func(t *testing.T) {
			r, base := standardRoom(t, ver)
			pl1 := base.state[stateKey{spec.MRoomPowerLevels, ""}]
			r.powerLevels(base, "pl2", creator, map[string]int64{alice: 60})
			a, b := base.fork(), base.fork()
			r.topic(a, "topic A", creator, "A")
			tb := r.topic(b, "topic B", creator, "B")
			// The superseded pl1 was never fetched.
			delete(r.events, pl1.EventID())
			got, err := Resolve(context.Background(), r.ver, sets(a, b), r)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if g, w := r.describe(got), r.describe(expect(base, tb)); g != w {
				t.Fatalf("got\n%s\nwant\n%s", g, w)
			}
		})
	}
}

func TestResolveWithUnparseableCreateContent(t *testing.T) {
	r := newTestRoom(t, gomatrixserverlib.RoomVersionV12)
	// Such a create event should have been rejected on receipt; here it
	// only must not crash anything, and no conflicted event can be
	// authorised against it.
	base := r.create(map[string]any{"additional_creators": "not a list"})
	r.join(base, creator)
	a, b := base.fork(), base.fork()
	r.topic(a, "topic A", creator, "A")
	r.topic(b, "topic B", creator, "B")
	got, err := Resolve(context.Background(), r.ver, sets(a, b), r)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if g, w := r.describe(got), r.describe(expect(base)); g != w {
		t.Fatalf("got\n%s\nwant\n%s", g, w)
	}
}

// withRoomID re-parses ev with another room_id; gomatrixserverlib accepts a
// domainless "!short" for v12 and panics on it later, in PDU.RoomID.
func withRoomID(t *testing.T, ver gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, roomID string) gomatrixserverlib.PDU {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(ev.JSON()))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	m["room_id"] = roomID
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	// Keep the event ID so that only the room ID is wrong.
	bad, err := ver.NewEventFromTrustedJSONWithEventID(ev.EventID(), raw, false)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return bad
}

func TestResolveMalformedRoomIDIsAnError(t *testing.T) {
	r, base := standardRoom(t, gomatrixserverlib.RoomVersionV12)
	pl1 := base.state[stateKey{spec.MRoomPowerLevels, ""}]
	r.powerLevels(base, "pl2", creator, map[string]int64{alice: 60})
	a, b := base.fork(), base.fork()
	r.topic(a, "topic A", creator, "A")
	tb := r.topic(b, "topic B", creator, "B")

	t.Run("in a state set", func(t *testing.T) {
		bb := b.fork()
		bb.apply(withRoomID(t, r.ver, tb, "!short"))
		if _, err := Resolve(context.Background(), r.ver, sets(a, bb), r); err == nil || !strings.Contains(err.Error(), "invalid room ID") {
			t.Fatalf("expected an invalid room ID error, got %v", err)
		}
	})
	t.Run("in an auth chain", func(t *testing.T) {
		loader := failingLoader{r, func(ids []string) (map[string]gomatrixserverlib.PDU, error) {
			out, _ := r.Events(context.Background(), ids)
			if _, ok := out[pl1.EventID()]; ok {
				out[pl1.EventID()] = withRoomID(t, r.ver, pl1, "!short")
			}
			return out, nil
		}}
		if _, err := Resolve(context.Background(), r.ver, sets(a, b), loader); err == nil || !strings.Contains(err.Error(), "invalid room ID") {
			t.Fatalf("expected an invalid room ID error, got %v", err)
		}
	})
}
