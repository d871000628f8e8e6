package sender

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/internal/testdb"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

const local = "local.test"

// waitLimit bounds every wait for something the sender does on its own
// goroutines; tests never sleep to synchronize.
const waitLimit = 10 * time.Second

// fakeClock is the sender's clock and backoff timer, moved by the test.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	// waits receives the duration of every After call, so that a test
	// knows when a worker has started to back off.
	waits chan time.Duration
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.UnixMilli(1_700_000_000_000), waits: make(chan time.Duration, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	select {
	case c.waits <- d:
	default:
	}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

// nextWait returns the duration of the next backoff a worker starts.
func (c *fakeClock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(waitLimit):
		t.Fatal("no backoff started")
		return 0
	}
}

// call is one SendTransaction the fake client saw, with its answer.
type call struct {
	txn gomatrixserverlib.Transaction
	err error
}

// fakeClient records transactions per destination and answers them as
// the test says (success unless told otherwise).
type fakeClient struct {
	mu     sync.Mutex
	answer map[spec.ServerName]func(ctx context.Context, txn gomatrixserverlib.Transaction) error
	calls  map[spec.ServerName]chan call
	total  atomic.Int64
}

func newClient() *fakeClient {
	return &fakeClient{answer: map[spec.ServerName]func(context.Context, gomatrixserverlib.Transaction) error{},
		calls: map[spec.ServerName]chan call{}}
}

func (c *fakeClient) on(dest spec.ServerName, fn func(ctx context.Context, txn gomatrixserverlib.Transaction) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer[dest] = fn
}

func (c *fakeClient) ch(dest spec.ServerName) chan call {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls[dest] == nil {
		c.calls[dest] = make(chan call, 1000)
	}
	return c.calls[dest]
}

func (c *fakeClient) SendTransaction(ctx context.Context, txn gomatrixserverlib.Transaction) (fclient.RespSend, error) {
	c.total.Add(1)
	c.mu.Lock()
	fn := c.answer[txn.Destination]
	c.mu.Unlock()
	var err error
	if fn != nil {
		err = fn(ctx, txn)
	}
	c.ch(txn.Destination) <- call{txn: txn, err: err}
	resp := fclient.RespSend{PDUs: map[string]fclient.PDUResult{}}
	return resp, err
}

// next returns the next transaction sent to dest.
func (c *fakeClient) next(t *testing.T, dest spec.ServerName) call {
	t.Helper()
	select {
	case got := <-c.ch(dest):
		return got
	case <-time.After(waitLimit):
		t.Fatalf("nothing sent to %s", dest)
		return call{}
	}
}

// none checks that nothing was sent to dest so far.
func (c *fakeClient) none(t *testing.T, dest spec.ServerName) {
	t.Helper()
	select {
	case got := <-c.ch(dest):
		t.Fatalf("sent to %s: %+v", dest, got.txn)
	default:
	}
}

// pduIDs collects the event IDs of successful transactions to dest until
// n were delivered.
func (c *fakeClient) pduIDs(t *testing.T, dest spec.ServerName, n int) ([]string, []call) {
	t.Helper()
	var ids []string
	var calls []call
	for len(ids) < n {
		got := c.next(t, dest)
		calls = append(calls, got)
		if got.err != nil {
			continue
		}
		ids = append(ids, eventIDs(got.txn)...)
	}
	return ids, calls
}

func eventIDs(txn gomatrixserverlib.Transaction) []string {
	var ids []string
	for _, p := range txn.PDUs {
		var ev struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(p, &ev)
		ids = append(ids, ev.EventID)
	}
	return ids
}

var errServer = gomatrix.HTTPError{Code: 500, Message: "boom"}

// env is a database, a stream and the fakes around a sender.
type env struct {
	t      *testing.T
	db     *storage.DB
	st     *stream.Stream
	clock  *fakeClock
	client *fakeClient
	nextID atomic.Int64

	mu     sync.Mutex
	passed int64
	pass   chan struct{}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	backend, dsn := testdb.Parse(t)
	db, err := storage.Open(context.Background(), backend, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &env{t: t, db: db, st: stream.New(0), clock: newClock(), client: newClient(), pass: make(chan struct{}, 1)}
}

// sender builds and starts a sender; it is stopped when the test ends.
func (e *env) sender(deny ...string) *Sender {
	e.t.Helper()
	s := New(Deps{
		DB: e.db, Stream: e.st, ServerName: local, Client: e.client, DenyServers: deny,
		Now: e.clock.Now, After: e.clock.After, MinBackoff: time.Second, MaxBackoff: time.Hour,
		PollInterval: time.Hour,
	})
	s.onPass = func(pos int64) {
		e.mu.Lock()
		e.passed = pos
		e.mu.Unlock()
		select {
		case e.pass <- struct{}{}:
		default:
		}
	}
	if err := s.Start(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Stop)
	return s
}

// synced waits until the sender has read the whole stream.
func (e *env) synced() {
	e.t.Helper()
	want := e.st.Current()
	deadline := time.After(waitLimit)
	for {
		e.mu.Lock()
		got := e.passed
		e.mu.Unlock()
		if got >= want {
			return
		}
		select {
		case <-e.pass:
		case <-deadline:
			e.t.Fatalf("sender read up to %d, stream is at %d", got, want)
		}
	}
}

type room struct {
	nid int64
	id  string
}

func (e *env) room(id string) room {
	e.t.Helper()
	nid, err := e.db.CreateRoom(e.t.Context(), id, "12", 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return room{nid: nid, id: id}
}

// event writes an accepted event at the next stream position (and, for
// member and other state events, the room's current state) and returns
// its ID.
func (e *env) event(r room, sender, typ string, stateKey *string, content string) string {
	e.t.Helper()
	id := fmt.Sprintf("$ev%d", e.nextID.Add(1))
	js, _ := json.Marshal(map[string]any{"event_id": id, "room_id": r.id, "type": typ, "sender": sender,
		"state_key": stateKey, "content": json.RawMessage(content)})
	err := e.st.Write(1, nil, func(pos int64) error {
		return e.db.Transact(e.t.Context(), func(tx *storage.Tx) error {
			nid, err := tx.InsertEvent(e.t.Context(), &storage.EventRow{RoomNID: r.nid, EventID: id, Type: typ, StateKey: stateKey,
				Sender: sender, Depth: pos, OriginServerTS: pos, StreamPos: pos, JSON: js})
			if err != nil || stateKey == nil {
				return err
			}
			var c struct {
				Membership string `json:"membership"`
			}
			_ = json.Unmarshal([]byte(content), &c)
			return tx.UpdateCurrentState(e.t.Context(), r.nid, []storage.CurrentStateChange{
				{Type: typ, StateKey: *stateKey, EventNID: nid, Membership: c.Membership}})
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// setup joins alice, lets the sender pass her join (so that it goes to
// nobody), then joins the remote users.
func (e *env) setup(r room, remotes ...string) {
	e.t.Helper()
	e.member(r, alice, alice, "join")
	e.synced()
	for _, u := range remotes {
		e.member(r, u, u, "join")
	}
	e.synced()
}

func (e *env) member(r room, sender, target, membership string) string {
	return e.event(r, sender, "m.room.member", &target, `{"membership":"`+membership+`"}`)
}

func (e *env) message(r room, sender, body string) string {
	return e.event(r, sender, "m.room.message", nil, `{"msgtype":"m.text","body":"`+body+`"}`)
}

func (e *env) queued(dest string) int {
	e.t.Helper()
	rows, err := e.db.QueuedPDUs(e.t.Context(), dest, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(rows)
}

// drained waits until nothing is queued for dest any more: a worker
// deletes what it sent after the client returned.
func (e *env) drained(dest string) {
	e.t.Helper()
	checkFor(e.t, func() bool { return e.queued(dest) == 0 }, "queue of "+dest+" to drain")
}

// checkFor polls cond until it holds.
func checkFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) backoffOf(dest string) storage.DestinationBackoff {
	e.t.Helper()
	bs, err := e.db.FederationBackoffs(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, b := range bs {
		if b.Destination == dest {
			return b
		}
	}
	return storage.DestinationBackoff{}
}

const (
	alice = "@alice:" + local
	bob   = "@bob:b.test"
	carol = "@carol:c.test"
	dave  = "@dave:d.test"
	erin  = "@erin:e.test"
)

func TestEventsGoToJoinedServersInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sender()
	r := e.room("!r:" + local)
	e.setup(r, bob, erin, dave)
	e.member(r, dave, dave, "leave")
	e.synced()

	invite := e.member(r, alice, carol, "invite") // c.test gets invites through the invite API
	m1 := e.message(r, alice, "one")
	e.message(r, bob, "from b") // remote events are not ours to send
	m2 := e.message(r, alice, "two")
	e.synced()
	kick := e.member(r, alice, erin, "leave") // e.test must learn it was kicked
	e.synced()
	m3 := e.message(r, alice, "three")
	e.synced()

	got, calls := e.client.pduIDs(t, "b.test", 5)
	if want := []string{invite, m1, m2, kick, m3}; !slices.Equal(got, want) {
		t.Fatalf("b.test got %q, want %q", got, want)
	}
	for _, c := range calls {
		if c.txn.Origin != local || c.txn.Destination != "b.test" || c.txn.TransactionID == "" || len(c.txn.PDUs) > maxPDUs {
			t.Fatalf("transaction %+v", c.txn)
		}
	}
	if got, _ := e.client.pduIDs(t, "e.test", 4); !slices.Equal(got, []string{invite, m1, m2, kick}) {
		t.Fatalf("e.test got %q", got)
	}
	e.client.none(t, "c.test")
	e.client.none(t, "d.test")
	e.client.none(t, local)
	e.client.none(t, "e.test")
	for _, d := range []string{"c.test", "d.test", local} {
		if n := e.queued(d); n != 0 {
			t.Fatalf("%d events queued for %s", n, d)
		}
	}
	e.drained("e.test")
	e.drained("b.test")
}

func TestBacklogIsSentInBatchesOf50(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.room("!big:" + local)
	e.member(r, alice, alice, "join")
	e.member(r, bob, bob, "join")
	// The sender was last at this position; the backlog after it is
	// read in passes of 7 events (the limit is lowered for the test).
	if err := e.db.SetConsumerPosition(t.Context(), consumerName, e.st.Current()); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 120 {
		want = append(want, e.message(r, alice, fmt.Sprint(i)))
	}
	s := New(Deps{DB: e.db, Stream: e.st, ServerName: local, Client: e.client, Now: e.clock.Now, After: e.clock.After, PollInterval: time.Hour})
	s.passLimit = 7
	// Hold the first transaction until the whole backlog is queued, so
	// that the batches are full.
	release := make(chan struct{})
	e.client.on("b.test", func(ctx context.Context, _ gomatrixserverlib.Transaction) error {
		<-release
		return nil
	})
	passes := make(chan int64, 1000)
	s.onPass = func(pos int64) {
		select {
		case passes <- pos:
		default:
		}
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	for pos := int64(0); pos < e.st.Current(); {
		select {
		case pos = <-passes:
		case <-time.After(waitLimit):
			t.Fatal("backlog not read")
		}
	}
	close(release)
	got, calls := e.client.pduIDs(t, "b.test", 120)
	if !slices.Equal(got, want) {
		t.Fatalf("order broken: got %q", got)
	}
	var sizes []int
	for _, c := range calls {
		sizes = append(sizes, len(c.txn.PDUs))
	}
	// The first transaction left with what the first passes had queued.
	if len(sizes) < 3 || slices.Max(sizes) != maxPDUs || sizes[len(sizes)-2] != maxPDUs {
		t.Fatalf("batch sizes %v", sizes)
	}
	e.drained("b.test")
}

func TestFailingDestinationBacksOffAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var failB atomic.Bool
	failB.Store(true)
	e.client.on("b.test", func(context.Context, gomatrixserverlib.Transaction) error {
		if failB.Load() {
			return errServer
		}
		return nil
	})
	// c.test hangs until the request is cancelled.
	hung := make(chan struct{}, 10)
	e.client.on("c.test", func(ctx context.Context, _ gomatrixserverlib.Transaction) error {
		hung <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	e.sender()
	r := e.room("!r:" + local)
	e.setup(r, bob, carol, dave)
	m1 := e.message(r, alice, "one")

	if got, _ := e.client.pduIDs(t, "d.test", 1); !slices.Equal(got, []string{m1}) {
		t.Fatalf("d.test got %q", got)
	}
	first := e.client.next(t, "b.test")
	if first.err == nil || !slices.Equal(eventIDs(first.txn), []string{m1}) {
		t.Fatalf("first attempt %+v", first)
	}
	if d := e.clock.nextWait(t); d < 800*time.Millisecond || d > 1200*time.Millisecond {
		t.Fatalf("first backoff %v", d)
	}
	if b := e.backoffOf("b.test"); b.Failures != 1 || b.RetryAtTS <= e.clock.Now().UnixMilli() {
		t.Fatalf("persisted backoff %+v", b)
	}
	// Others are not held up by b.test backing off or c.test hanging.
	m2 := e.message(r, alice, "two")
	if got, _ := e.client.pduIDs(t, "d.test", 1); !slices.Equal(got, []string{m2}) {
		t.Fatalf("d.test got %q", got)
	}
	e.client.none(t, "b.test")

	// The retry after the backoff sends the very same transaction; the
	// second failure doubles the backoff.
	e.clock.Advance(1500 * time.Millisecond)
	second := e.client.next(t, "b.test")
	if second.txn.TransactionID != first.txn.TransactionID || !slices.Equal(eventIDs(second.txn), []string{m1}) {
		t.Fatalf("retry %+v, first %+v", second.txn, first.txn)
	}
	if d := e.clock.nextWait(t); d < 1600*time.Millisecond || d > 2400*time.Millisecond {
		t.Fatalf("second backoff %v", d)
	}
	failB.Store(false)
	e.clock.Advance(3 * time.Second)
	got, calls := e.client.pduIDs(t, "b.test", 2)
	if !slices.Equal(got, []string{m1, m2}) || calls[0].txn.TransactionID != first.txn.TransactionID {
		t.Fatalf("after recovery b.test got %q in %+v", got, calls)
	}
	if calls[len(calls)-1].txn.TransactionID == first.txn.TransactionID {
		t.Fatal("a new batch reused the transaction ID")
	}
	select {
	case <-hung: // the hanging request is in flight all along
	case <-time.After(waitLimit):
		t.Fatal("nothing sent to c.test")
	}
	checkFor(t, func() bool { return e.backoffOf("b.test").Failures == 0 }, "the backoff to be cleared after success")
}

func TestPermanentRefusalDropsTheBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var refused atomic.Bool
	e.client.on("b.test", func(context.Context, gomatrixserverlib.Transaction) error {
		if refused.CompareAndSwap(false, true) {
			return gomatrix.HTTPError{Code: 400, Message: "bad"}
		}
		return nil
	})
	e.sender()
	r := e.room("!r:" + local)
	e.setup(r, bob)
	m1 := e.message(r, alice, "refused")
	if got := e.client.next(t, "b.test"); got.err == nil || !slices.Equal(eventIDs(got.txn), []string{m1}) {
		t.Fatalf("first attempt %+v", got)
	}
	e.clock.nextWait(t)
	m2 := e.message(r, alice, "accepted")
	e.clock.Advance(2 * time.Second)
	if got, _ := e.client.pduIDs(t, "b.test", 1); !slices.Equal(got, []string{m2}) {
		t.Fatalf("after the refusal b.test got %q", got)
	}
}

func TestRestartResumesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.client.on("b.test", func(context.Context, gomatrixserverlib.Transaction) error { return errServer })
	s1 := e.sender()
	r := e.room("!r:" + local)
	e.setup(r, bob)
	m1 := e.message(r, alice, "one")
	m2 := e.message(r, alice, "two")
	e.synced()
	e.client.next(t, "b.test")
	e.clock.nextWait(t)
	s1.Stop()
	// Everything read is queued, and the position says so.
	if pos, _, _ := e.db.ConsumerPosition(t.Context(), consumerName); pos != e.st.Current() {
		t.Fatalf("position %d, stream at %d", pos, e.st.Current())
	}
	if n := e.queued("b.test"); n != 2 {
		t.Fatalf("%d queued for b.test", n)
	}
	if b := e.backoffOf("b.test"); b.Failures != 1 {
		t.Fatalf("backoff %+v", b)
	}

	// A new sender on the same database: b.test is still backing off
	// until it shows signs of life.
	e.client = newClient()
	s2 := e.sender()
	if d := e.clock.nextWait(t); d <= 0 || d > 1200*time.Millisecond {
		t.Fatalf("backoff after restart %v", d)
	}
	e.client.none(t, "b.test")
	s2.Wake("b.test")
	got, _ := e.client.pduIDs(t, "b.test", 2)
	if !slices.Equal(got, []string{m1, m2}) {
		t.Fatalf("after restart b.test got %q", got)
	}
	m3 := e.message(r, alice, "three")
	if got, _ := e.client.pduIDs(t, "b.test", 1); !slices.Equal(got, []string{m3}) {
		t.Fatalf("then b.test got %q", got)
	}
	e.synced()
	e.drained("b.test")
	if b := e.backoffOf("b.test"); b.Failures != 0 {
		t.Fatalf("backoff after Wake %+v", b)
	}
	if n := e.client.total.Load(); n != 2 {
		t.Fatalf("%d transactions after the restart, want 2", n)
	}
}

func TestEDUsAreBatchedWithPDUs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.room("!r:" + local)
	e.member(r, alice, alice, "join")
	e.member(r, bob, bob, "join")
	if err := e.db.SetConsumerPosition(t.Context(), consumerName, e.st.Current()); err != nil {
		t.Fatal(err)
	}
	var pdus []string
	for i := range 60 {
		pdus = append(pdus, e.message(r, alice, fmt.Sprint(i)))
	}
	// Persistent EDUs queued before the start wait in the database.
	early := New(Deps{DB: e.db, Stream: e.st, ServerName: local, Client: e.client})
	for i := range 250 {
		edu := gomatrixserverlib.EDU{Type: "m.test", Content: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if err := early.QueueEDU(t.Context(), []spec.ServerName{"b.test", local}, edu, true); err != nil {
			t.Fatal(err)
		}
	}
	// Hold the first transaction until the events are queued too.
	release := make(chan struct{})
	e.client.on("b.test", func(ctx context.Context, txn gomatrixserverlib.Transaction) error {
		if len(txn.EDUs) > 0 && string(txn.EDUs[0].Content) == `{"n":0}` {
			<-release
		}
		return nil
	})
	e.sender()
	e.synced()
	close(release)
	var gotPDUs []string
	n := 0
	for n < 250 {
		c := e.client.next(t, "b.test")
		if len(c.txn.EDUs) > maxEDUs || len(c.txn.PDUs) > maxPDUs {
			t.Fatalf("transaction with %d PDUs and %d EDUs", len(c.txn.PDUs), len(c.txn.EDUs))
		}
		for _, edu := range c.txn.EDUs {
			if want := fmt.Sprintf(`{"n":%d}`, n); edu.Type != "m.test" || string(edu.Content) != want ||
				edu.Origin != local || edu.Destination != "b.test" {
				t.Fatalf("EDU %+v, want content %s", edu, want)
			}
			n++
		}
		gotPDUs = append(gotPDUs, eventIDs(c.txn)...)
	}
	for len(gotPDUs) < len(pdus) {
		gotPDUs = append(gotPDUs, eventIDs(e.client.next(t, "b.test").txn)...)
	}
	if !slices.Equal(gotPDUs, pdus) {
		t.Fatalf("PDUs %q", gotPDUs)
	}
	e.client.none(t, local)
}

func TestReceiptsAndTypingBecomeEDUs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.sender()
	tr := typing.New(e.st, e.clock.Now)
	t.Cleanup(tr.Close)
	tr.Listen(s.OnTyping)
	r := e.room("!r:" + local)
	e.setup(r, bob)
	m1 := e.message(r, bob, "hello")
	e.synced()

	receipt := func(user, typ, thread string) {
		err := e.st.Write(1, nil, func(pos int64) error {
			_, err := e.db.PutReceipt(t.Context(), storage.Receipt{RoomNID: r.nid, UserID: user, Type: typ, ThreadID: thread,
				EventID: m1, EventPos: 3, TS: 1234, StreamPos: pos})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	receipt(bob, storage.ReceiptRead, "")               // remote: not ours
	receipt(alice, storage.ReceiptReadPrivate, "")      // private: never leaves
	receipt(alice, storage.ReceiptRead, "")             // sent
	receipt(alice, storage.ReceiptRead, "$thread:root") // sent, with its thread
	e.synced()
	var edus []gomatrixserverlib.EDU
	for len(edus) < 2 {
		edus = append(edus, e.client.next(t, "b.test").txn.EDUs...)
	}
	want := []string{
		`{"!r:local.test":{"m.read":{"@alice:local.test":{"data":{"ts":1234},"event_ids":["` + m1 + `"]}}}}`,
		`{"!r:local.test":{"m.read":{"@alice:local.test":{"data":{"thread_id":"$thread:root","ts":1234},"event_ids":["` + m1 + `"]}}}}`,
	}
	for i, edu := range edus {
		if edu.Type != "m.receipt" || string(edu.Content) != want[i] {
			t.Fatalf("EDU %d: %s %s, want %s", i, edu.Type, edu.Content, want[i])
		}
	}

	// Typing: local users only; a refresh within 20 s is not repeated.
	tr.Set(r.id, bob, true, 10*time.Second, nil)
	tr.Set(r.id, alice, true, 10*time.Second, nil)
	tr.Set(r.id, alice, true, 10*time.Second, nil)
	tr.Set(r.id, alice, false, 0, nil)
	last := `{"room_id":"!r:local.test","typing":false,"user_id":"@alice:local.test"}`
	var got []string
	for len(got) == 0 || got[len(got)-1] != last {
		c := e.client.next(t, "b.test")
		for _, edu := range c.txn.EDUs {
			if edu.Type != "m.typing" {
				t.Fatalf("EDU %+v", edu)
			}
			got = append(got, string(edu.Content))
		}
	}
	// The stop replaces a start still waiting, so a single stop is fine
	// as well.
	start := `{"room_id":"!r:local.test","typing":true,"user_id":"@alice:local.test"}`
	if len(got) > 2 || len(got) == 2 && got[0] != start {
		t.Fatalf("typing EDUs %q", got)
	}

	// Typing on for longer than other servers' timeout is announced
	// again every 20 s.
	for range 2 {
		tr.Set(r.id, alice, true, 30*time.Second, nil)
		c := e.client.next(t, "b.test")
		if len(c.txn.EDUs) != 1 || string(c.txn.EDUs[0].Content) != start {
			t.Fatalf("typing refresh %+v", c.txn.EDUs)
		}
		e.clock.Advance(21 * time.Second)
	}
}

func TestEphemeralEDUsExpireWhileBackingOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var fail atomic.Bool
	e.client.on("b.test", func(context.Context, gomatrixserverlib.Transaction) error {
		if fail.Load() {
			return errServer
		}
		return nil
	})
	s := e.sender()
	edu := func(n int) gomatrixserverlib.EDU {
		return gomatrixserverlib.EDU{Type: "m.test", Content: []byte(fmt.Sprintf(`{"n":%d}`, n))}
	}
	queue := func(n int, persistent bool) {
		if err := s.QueueEDU(t.Context(), []spec.ServerName{"b.test"}, edu(n), persistent); err != nil {
			t.Fatal(err)
		}
	}
	queue(1, false)
	if c := e.client.next(t, "b.test"); len(c.txn.EDUs) != 1 || string(c.txn.EDUs[0].Content) != `{"n":1}` {
		t.Fatalf("ephemeral EDU sent as %+v", c.txn.EDUs)
	}
	fail.Store(true)
	queue(2, true)
	if c := e.client.next(t, "b.test"); c.err == nil {
		t.Fatal("expected a failure")
	}
	e.clock.nextWait(t)
	queue(3, false) // waits behind the backoff, and outlives its use
	fail.Store(false)
	e.clock.Advance(31 * time.Second)
	if c := e.client.next(t, "b.test"); c.err != nil || len(c.txn.EDUs) != 1 || string(c.txn.EDUs[0].Content) != `{"n":2}` {
		t.Fatalf("retry %+v", c)
	}
	checkFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.dests["b.test"] == nil
	}, "b.test's worker to finish")
	e.client.none(t, "b.test")
	s.Wake("b.test") // not backing off: nothing to do
	e.client.none(t, "b.test")
}

func TestDeniedServersAndRoomACL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sender("*.evil.test", "evil.test")
	r := e.room("!r:" + local)
	e.setup(r, bob, carol, "@x:evil.test", "@y:sub.evil.test:8448", "@z:1.2.3.4:8448", "@w:ok.test")
	empty := ""
	acl := e.event(r, alice, "m.room.server_acl", &empty, `{"allow":["*"],"deny":["C.test"],"allow_ip_literals":false}`)
	m1 := e.message(r, alice, "hi")
	e.synced()
	for _, d := range []spec.ServerName{"b.test", "ok.test"} {
		if got, _ := e.client.pduIDs(t, d, 2); !slices.Equal(got, []string{acl, m1}) {
			t.Fatalf("%s got %q", d, got)
		}
	}
	for _, d := range []string{"c.test", "evil.test", "sub.evil.test:8448", "1.2.3.4:8448"} {
		if n := e.queued(d); n != 0 {
			t.Fatalf("%d queued for %s", n, d)
		}
		e.client.none(t, spec.ServerName(d))
	}
}

func TestACLMatching(t *testing.T) {
	t.Parallel()
	acl := parseACL([]byte(`{"allow":["*.example.org","exa?ple.com",7],"deny":["bad.example.org"],"allow_ip_literals":false}`))
	for server, want := range map[string]bool{
		"a.example.org": true, "a.example.org:8448": true, "A.Example.ORG": true, "example.org": false,
		"bad.example.org": false, "bad.example.org:1": false, "example.com": true, "exaample.com": false,
		"1.2.3.4": false, "[::1]:8448": false, "other.net": false,
	} {
		if got := acl.allows(server); got != want {
			t.Errorf("allows(%q) = %v, want %v", server, got, want)
		}
	}
	if !parseACL([]byte(`{"allow":["*"]}`)).allows("1.2.3.4:80") {
		t.Error("IP literals are allowed by default")
	}
	if parseACL([]byte(`{}`)).allows("a.b") {
		t.Error("an ACL without allow allows nobody")
	}
	for _, c := range []struct {
		p, s string
		want bool
	}{{"*", "", true}, {"a*c", "abbbc", true}, {"a*c", "abbb", false}, {"?", "", false}, {"*.*", "a.b", true}, {"a", "A", false}} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

func TestEventRedactedWhileQueuedIsSentRedacted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The first event's transaction is held in flight while the second
	// waits in the queue and is redacted.
	release, inFlight := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	e.client.on("b.test", func(ctx context.Context, txn gomatrixserverlib.Transaction) error {
		if len(txn.PDUs) > 0 && held.CompareAndSwap(false, true) {
			close(inFlight)
			<-release
		}
		return nil
	})
	e.sender()
	r := e.room("!r:" + local)
	e.setup(r, bob)
	e.message(r, alice, "in flight")
	select {
	case <-inFlight:
	case <-time.After(waitLimit):
		t.Fatal("nothing sent")
	}
	secret := e.message(r, alice, "oops, secret")
	e.synced()
	if err := e.db.SetRedactedBy(t.Context(), secret, "$redaction"); err != nil {
		t.Fatal(err)
	}
	close(release)
	var pdus []json.RawMessage
	for len(pdus) < 2 {
		pdus = append(pdus, e.client.next(t, "b.test").txn.PDUs...)
	}
	var ev struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(pdus[1], &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "m.room.message" || string(ev.Content) != "{}" {
		t.Fatalf("redacted event sent as %s", pdus[1])
	}
}
