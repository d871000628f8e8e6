package stateres

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

const (
	testServer = spec.ServerName("example.org")
	testKeyID  = gomatrixserverlib.KeyID("ed25519:test")

	creator = "@creator:example.org"
	alice   = "@alice:example.org"
	bob     = "@bob:example.org"
	charlie = "@charlie:example.org"
	dave    = "@dave:example.org"
)

// testRoom builds real, signed events for one room and remembers them all so
// that it can act as the EventLoader.
type testRoom struct {
	tb       testing.TB
	ver      gomatrixserverlib.IRoomVersion
	priv     ed25519.PrivateKey
	roomID   string
	clock    int64
	events   map[string]gomatrixserverlib.PDU
	labels   map[string]string
	rejected map[string]bool
}

// branch is the state of the room along one fork of the DAG, and where the
// next event on that fork attaches.
type branch struct {
	state map[stateKey]gomatrixserverlib.PDU
	head  string
	depth int64
}

func (b *branch) fork() *branch {
	return &branch{state: maps.Clone(b.state), head: b.head, depth: b.depth}
}

// apply puts an event into this fork's state without making it the head, as
// when a fork has learnt of an event from another fork through a merge.
func (b *branch) apply(evs ...gomatrixserverlib.PDU) *branch {
	for _, ev := range evs {
		b.state[keyOf(ev)] = ev
	}
	return b
}

func (b *branch) list() []gomatrixserverlib.PDU {
	return slices.Collect(maps.Values(b.state))
}

type eventOpt func(*eventOpts)

type eventOpts struct {
	ts       int64
	rejected bool
}

// at pins origin_server_ts (milliseconds) instead of using the room clock.
func at(ts int64) eventOpt { return func(o *eventOpts) { o.ts = ts } }

// rejected marks the event as rejected in the loader.
func rejected() eventOpt { return func(o *eventOpts) { o.rejected = true } }

func newTestRoom(tb testing.TB, ver gomatrixserverlib.RoomVersion) *testRoom {
	tb.Helper()
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "veche stateres test signing key!")
	return &testRoom{
		tb:       tb,
		ver:      gomatrixserverlib.MustGetRoomVersion(ver),
		priv:     ed25519.NewKeyFromSeed(seed),
		clock:    1_700_000_000_000,
		events:   make(map[string]gomatrixserverlib.PDU),
		labels:   make(map[string]string),
		rejected: make(map[string]bool),
	}
}

// create sends m.room.create and returns the first branch. For v12 the room ID
// is derived from the create event's ID.
func (r *testRoom) create(extraContent map[string]any) *branch {
	r.tb.Helper()
	content := map[string]any{"room_version": string(r.ver.Version())}
	if !r.ver.PrivilegedCreators() {
		// Required up to v10, ignored by v11.
		content["creator"] = creator
	}
	for k, v := range extraContent {
		content[k] = v
	}
	if !r.ver.DomainlessRoomIDs() {
		r.roomID = "!room:" + string(testServer)
	}
	b := &branch{state: make(map[stateKey]gomatrixserverlib.PDU)}
	ev := r.send(b, "create", creator, spec.MRoomCreate, "", content)
	if r.ver.DomainlessRoomIDs() {
		r.roomID = "!" + ev.EventID()[1:]
	}
	return b
}

// send builds an event on branch b with auth events chosen from b's state,
// and makes it b's new head and (for state events) part of b's state.
func (r *testRoom) send(b *branch, label, sender, evType, sk string, content any, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	o := eventOpts{}
	for _, opt := range opts {
		opt(&o)
	}
	ts := o.ts
	if ts == 0 {
		r.clock += 1000
		ts = r.clock
	}
	raw, err := json.Marshal(content)
	if err != nil {
		r.tb.Fatalf("marshal content of %s: %v", label, err)
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: sender,
		Type:     evType,
		StateKey: &sk,
		Content:  raw,
		Depth:    b.depth + 1,
	}
	if !(evType == spec.MRoomCreate && r.ver.DomainlessRoomIDs()) {
		proto.RoomID = r.roomID
	}
	if b.head != "" {
		proto.PrevEvents = []string{b.head}
	} else {
		proto.PrevEvents = []string{}
	}
	eb := r.ver.NewEventBuilderFromProtoEvent(&proto)
	if evType != spec.MRoomCreate {
		needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
		if err != nil {
			r.tb.Fatalf("state needed for %s: %v", label, err)
		}
		var current []gomatrixserverlib.PDU
		for _, t := range needed.Tuples() {
			if ev, ok := b.state[stateKey{Type: t.EventType, StateKey: t.StateKey}]; ok {
				current = append(current, ev)
			}
		}
		provider, err := gomatrixserverlib.NewAuthEvents(current)
		if err != nil {
			r.tb.Fatalf("auth provider for %s: %v", label, err)
		}
		if err := eb.AddAuthEvents(provider); err != nil {
			r.tb.Fatalf("auth events for %s: %v", label, err)
		}
	}
	ev, err := eb.Build(time.UnixMilli(ts), testServer, testKeyID, r.priv)
	if err != nil {
		r.tb.Fatalf("build %s: %v", label, err)
	}
	r.events[ev.EventID()] = ev
	r.labels[ev.EventID()] = label
	if o.rejected {
		r.rejected[ev.EventID()] = true
	}
	b.state[keyOf(ev)] = ev
	b.head = ev.EventID()
	b.depth++
	return ev
}

func (r *testRoom) member(b *branch, label, sender, target, membership string, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	return r.send(b, label, sender, spec.MRoomMember, target, map[string]any{"membership": membership}, opts...)
}

func (r *testRoom) join(b *branch, user string, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	return r.member(b, "join "+user, user, user, spec.Join, opts...)
}

func (r *testRoom) topic(b *branch, label, sender, topic string, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	return r.send(b, label, sender, "m.room.topic", "", map[string]any{"topic": topic}, opts...)
}

func (r *testRoom) joinRules(b *branch, label, rule string, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	return r.send(b, label, creator, spec.MRoomJoinRules, "", map[string]any{"join_rule": rule}, opts...)
}

// powerLevels sends m.room.power_levels with the given user levels. Before v12
// the creator is given 100 unless users says otherwise; from v12 creators
// must not be listed at all.
func (r *testRoom) powerLevels(b *branch, label, sender string, users map[string]int64, opts ...eventOpt) gomatrixserverlib.PDU {
	r.tb.Helper()
	all := map[string]int64{}
	if !r.ver.PrivilegedCreators() {
		all[creator] = 100
	}
	for u, l := range users {
		all[u] = l
	}
	content := map[string]any{
		"users":          all,
		"users_default":  0,
		"events":         map[string]int64{spec.MRoomPowerLevels: 100},
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
	}
	return r.send(b, label, sender, spec.MRoomPowerLevels, "", content, opts...)
}

// standardRoom creates a public room in which the creator, alice (level 50)
// and bob (level 0) are joined.
func standardRoom(tb testing.TB, ver gomatrixserverlib.RoomVersion) (*testRoom, *branch) {
	tb.Helper()
	r := newTestRoom(tb, ver)
	b := r.create(nil)
	r.join(b, creator)
	r.powerLevels(b, "pl1", creator, map[string]int64{alice: 50})
	r.joinRules(b, "public", spec.Public)
	r.join(b, alice)
	r.join(b, bob)
	return r, b
}

// Events implements EventLoader.
func (r *testRoom) Events(_ context.Context, ids []string) (map[string]gomatrixserverlib.PDU, error) {
	out := make(map[string]gomatrixserverlib.PDU, len(ids))
	for _, id := range ids {
		if ev, ok := r.events[id]; ok {
			out[id] = ev
		}
	}
	return out, nil
}

// IsRejected implements EventLoader.
func (r *testRoom) IsRejected(id string) bool { return r.rejected[id] }

func (r *testRoom) label(ev gomatrixserverlib.PDU) string {
	if l, ok := r.labels[ev.EventID()]; ok {
		return l
	}
	return ev.EventID()
}

// describe renders a state as sorted "type|state_key=label" lines, so that
// failures read in terms of the test's own event names.
func (r *testRoom) describe(state []gomatrixserverlib.PDU) string {
	lines := make([]string, 0, len(state))
	for _, ev := range state {
		lines = append(lines, fmt.Sprintf("%s|%s=%s", ev.Type(), *ev.StateKey(), r.label(ev)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// expect is the full state wanted: base's state with evs applied on top.
func expect(base *branch, evs ...gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	b := base.fork()
	b.apply(evs...)
	return sortedState(b.state)
}
