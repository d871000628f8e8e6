package presence_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/storage"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// edus records what presence queues for other servers.
type edus struct {
	mu   sync.Mutex
	sent []sentEDU
}

type sentEDU struct {
	dests []spec.ServerName
	push  []map[string]any
}

func (e *edus) QueueEDU(_ context.Context, dests []spec.ServerName, edu gomatrixserverlib.EDU, persistent bool) error {
	var c struct {
		Push []map[string]any `json:"push"`
	}
	if edu.Type != "m.presence" || persistent || json.Unmarshal(edu.Content, &c) != nil {
		panic("unexpected EDU " + edu.Type)
	}
	e.mu.Lock()
	e.sent = append(e.sent, sentEDU{dests: dests, push: c.Push})
	e.mu.Unlock()
	return nil
}

func (e *edus) take() []sentEDU {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.sent
	e.sent = nil
	return out
}

type fixture struct {
	t     *testing.T
	db    *storage.DB
	st    *stream.Stream
	clock *clock
	edus  *edus
	p     *presence.Presence
}

// newFixture opens a database where @alice:x shares a room with
// @bob:remote, and @carol:x is in a room of her own with @dave:far.
func newFixture(t *testing.T, enabled bool) *fixture {
	t.Helper()
	backend, dsn := testdb.Parse(t)
	db, err := storage.Open(context.Background(), backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for room, members := range map[string][]string{"!r1:x": {"@alice:x", "@bob:remote"}, "!r2:x": {"@carol:x"}, "!r3:far": {"@dave:far"}} {
		nid, err := db.CreateRoom(t.Context(), room, "12", 1)
		if err != nil {
			t.Fatal(err)
		}
		var changes []storage.CurrentStateChange
		for i, u := range members {
			changes = append(changes, storage.CurrentStateChange{Type: "m.room.member", StateKey: u, EventNID: nid*10 + int64(i), Membership: "join"})
		}
		if err := db.UpdateCurrentState(t.Context(), nid, changes); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{t: t, db: db, st: stream.New(0), clock: &clock{now: time.UnixMilli(1_700_000_000_000)}, edus: &edus{}}
	f.p = presence.New(presence.Deps{DB: db, Stream: f.st, ServerName: "x", Enabled: enabled, Now: f.clock.Now})
	f.p.EDUs = f.edus
	return f
}

func (f *fixture) get(user string) presence.Content {
	f.t.Helper()
	c, err := f.p.Get(f.t.Context(), user)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) expect(user, state string) presence.Content {
	f.t.Helper()
	c := f.get(user)
	if c.Presence != state {
		f.t.Fatalf("%s is %s, want %s", user, c.Presence, state)
	}
	return c
}

func (f *fixture) sweep() {
	f.t.Helper()
	if err := f.p.Sweep(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) syncing(user, set string) func() {
	f.t.Helper()
	done, err := f.p.Syncing(f.t.Context(), user, set)
	if err != nil {
		f.t.Fatal(err)
	}
	return done
}

// since returns the presence events for user in (after, now].
func (f *fixture) since(user string, after int64) map[string]presence.Content {
	f.t.Helper()
	evs, err := f.p.Since(f.t.Context(), user, after, f.st.Current())
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]presence.Content{}
	for _, e := range evs {
		if e.Type != "m.presence" {
			f.t.Fatalf("event type %s", e.Type)
		}
		out[e.Sender] = e.Content
	}
	return out
}

func TestLocalLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	ctx := t.Context()
	const alice = "@alice:x"

	f.expect(alice, presence.Offline)
	if f.get(alice).LastActiveAgo != nil {
		t.Fatal("a user never seen has no last active time")
	}
	// set_presence=offline changes nothing.
	f.syncing(alice, presence.Offline)()
	f.expect(alice, presence.Offline)
	if f.st.Current() != 0 {
		t.Fatal("set_presence=offline wrote something")
	}

	// A sync brings alice online, and tells bob's server.
	done := f.syncing(alice, "")
	c := f.expect(alice, presence.Online)
	if c.LastActiveAgo == nil || *c.LastActiveAgo != 0 || c.CurrentlyActive == nil || !*c.CurrentlyActive {
		t.Fatalf("online after sync: %+v", c)
	}
	pos := f.st.Current()
	if pos != 1 {
		t.Fatalf("stream at %d after going online", pos)
	}
	sent := f.edus.take()
	if len(sent) != 1 || len(sent[0].dests) != 1 || sent[0].dests[0] != "remote" || sent[0].push[0]["user_id"] != alice ||
		sent[0].push[0]["presence"] != "online" || sent[0].push[0]["currently_active"] != true || sent[0].push[0]["last_active_ago"] != 0.0 {
		t.Fatalf("EDUs after going online: %+v", sent)
	}
	// Syncing again changes nothing anyone must hear of.
	f.syncing(alice, presence.Online)()
	if f.st.Current() != pos || len(f.edus.take()) != 0 {
		t.Fatal("a second sync wrote or sent something")
	}

	// PUT unavailable with a status message.
	msg := "in a meeting"
	if err := f.p.Set(ctx, alice, presence.Unavailable, &msg); err != nil {
		t.Fatal(err)
	}
	c = f.expect(alice, presence.Unavailable)
	if c.StatusMsg == nil || *c.StatusMsg != msg || *c.CurrentlyActive {
		t.Fatalf("after PUT: %+v", c)
	}
	if got := f.since("@bob:remote", pos); got[alice].Presence != presence.Unavailable || len(got) != 1 {
		t.Fatalf("bob's view since %d: %+v", pos, got)
	}
	if got := f.since("@carol:x", 0); len(got) != 0 {
		t.Fatalf("carol shares no room with alice but sees %+v", got)
	}
	if sent := f.edus.take(); len(sent) != 1 || sent[0].push[0]["status_msg"] != msg {
		t.Fatalf("EDUs after PUT: %+v", sent)
	}
	// A sync does not end an unavailable state; activity does.
	f.syncing(alice, presence.Online)()
	f.expect(alice, presence.Unavailable)
	f.clock.Add(2 * time.Minute)
	if err := f.p.Active(ctx, alice); err != nil {
		t.Fatal(err)
	}
	c = f.expect(alice, presence.Online)
	if *c.LastActiveAgo != 0 || c.StatusMsg == nil {
		t.Fatalf("after activity: %+v (the status message stays)", c)
	}

	// Idle while a long-poll is in progress: unavailable, not offline.
	f.clock.Add(presence.IdleTimeout)
	f.sweep()
	c = f.expect(alice, presence.Unavailable)
	if *c.LastActiveAgo != presence.IdleTimeout.Milliseconds() {
		t.Fatalf("last active %d ms ago, want %d", *c.LastActiveAgo, presence.IdleTimeout.Milliseconds())
	}
	// set_presence=unavailable is a sync too; then nobody syncs.
	f.syncing(alice, presence.Unavailable)()
	done()
	f.clock.Add(presence.SyncTimeout - time.Second)
	f.sweep()
	f.expect(alice, presence.Unavailable)
	f.clock.Add(time.Second)
	before := f.st.Current()
	f.sweep()
	f.expect(alice, presence.Offline)
	if got := f.since(alice, before); got[alice].Presence != presence.Offline {
		t.Fatalf("alice's own view: %+v", got)
	}
	// Offline users stay offline on activity (no client listens).
	if err := f.p.Active(ctx, alice); err != nil {
		t.Fatal(err)
	}
	f.expect(alice, presence.Offline)
}

func TestFederationPing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	ctx := t.Context()
	done := f.syncing("@alice:x", presence.Online)
	defer done()
	f.edus.take()
	// Alice stays active; her presence is announced again every
	// FederationPing without new stream positions.
	for range 3 {
		f.clock.Add(presence.FederationPing / 3)
		if err := f.p.Active(ctx, "@alice:x"); err != nil {
			t.Fatal(err)
		}
		f.sweep()
	}
	if f.st.Current() != 1 {
		t.Fatalf("stream at %d: activity of an online user is not news", f.st.Current())
	}
	sent := f.edus.take()
	if len(sent) != 1 || sent[0].push[0]["presence"] != "online" {
		t.Fatalf("pings: %+v", sent)
	}
	f.clock.Add(presence.FederationPing / 2)
	if err := f.p.Active(ctx, "@alice:x"); err != nil {
		t.Fatal(err)
	}
	f.sweep()
	if sent := f.edus.take(); len(sent) != 0 {
		t.Fatalf("pinged again too soon: %+v", sent)
	}
}

func TestReceive(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	ctx := t.Context()
	sub := f.st.Subscribe("@alice:x")
	defer sub.Close()
	// Twice the cap in bytes, with the cap in the middle of a character.
	long := "x" + strings.Repeat("é", presence.MaxStatusMsgBytes)
	edu, _ := json.Marshal(map[string]any{"push": []map[string]any{
		{"user_id": "@bob:remote", "presence": "unavailable", "last_active_ago": 60000, "status_msg": long},
		{"user_id": "@mallory:elsewhere", "presence": "online", "last_active_ago": 0}, // not of the origin
		{"user_id": "@eve:remote", "presence": "online", "last_active_ago": 0},        // shares no room with us
		{"user_id": "@bob:remote", "presence": "busy", "last_active_ago": 0},          // not a state
		{"user_id": 42},
	}})
	if err := f.p.Receive(ctx, "remote", edu); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.C():
	default:
		t.Fatal("alice was not woken")
	}
	c := f.expect("@bob:remote", presence.Unavailable)
	if *c.LastActiveAgo != 60000 || c.StatusMsg == nil || len(*c.StatusMsg) != presence.MaxStatusMsgBytes-1 || !utf8.ValidString(*c.StatusMsg) || *c.CurrentlyActive {
		t.Fatalf("bob: %+v (status %d bytes)", c, len(*c.StatusMsg))
	}
	f.expect("@eve:remote", presence.Offline)
	f.expect("@mallory:elsewhere", presence.Offline)
	if got := f.since("@alice:x", 0); len(got) != 1 || got["@bob:remote"].Presence != presence.Unavailable {
		t.Fatalf("alice sees %+v", got)
	}
	if len(f.edus.take()) != 0 {
		t.Fatal("remote presence was sent on")
	}
	// A repeat with only a newer last active time is not news, but GET
	// has it.
	pos := f.st.Current()
	edu, _ = json.Marshal(map[string]any{"push": []map[string]any{
		{"user_id": "@bob:remote", "presence": "unavailable", "last_active_ago": 1000, "status_msg": long},
	}})
	if err := f.p.Receive(ctx, "remote", edu); err != nil {
		t.Fatal(err)
	}
	if f.st.Current() != pos || *f.get("@bob:remote").LastActiveAgo != 1000 {
		t.Fatalf("repeat: stream %d→%d, %+v", pos, f.st.Current(), f.get("@bob:remote"))
	}
	// Bob's server goes quiet.
	f.clock.Add(presence.RemoteTimeout)
	f.sweep()
	f.expect("@bob:remote", presence.Offline)
	if err := f.p.Receive(ctx, "remote", []byte(`{"push":"nope"}`)); err == nil {
		t.Fatal("a malformed EDU was accepted")
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	ctx := t.Context()
	f.syncing("@alice:x", presence.Online)()
	if err := f.p.Set(ctx, "@alice:x", presence.Online, nil); err != nil {
		t.Fatal(err)
	}
	edu := []byte(`{"push":[{"user_id":"@bob:remote","presence":"online","last_active_ago":0}]}`)
	if err := f.p.Receive(ctx, "remote", edu); err != nil {
		t.Fatal(err)
	}
	f.sweep()
	f.expect("@alice:x", presence.Offline)
	f.expect("@bob:remote", presence.Offline)
	if f.st.Current() != 0 || len(f.edus.take()) != 0 || len(f.since("@alice:x", 0)) != 0 {
		t.Fatal("disabled presence wrote or sent something")
	}
}
