package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// scenario is one measurement. run returns an error only when the scenario
// could not be set up or carried out at all; failed requests and failed
// checks go to the tally and still leave figures to report.
type scenario struct {
	name, description string
	run               func(b *bench, ctx context.Context, r *Result, t *tally) error
	// explicit scenarios need more than one server and run only when
	// named, not as part of "all".
	explicit bool
}

var scenarios = []scenario{
	{name: "send-one", description: "one sender sends messages one after another into one room", run: (*bench).sendOne},
	{name: "send-many", description: "concurrent senders (distinct users) send into one shared room", run: (*bench).sendMany},
	{name: "delivery", description: "a sender's message until a receiver's long-polling /sync has it", run: (*bench).delivery},
	{name: "initial-sync", description: "initial /sync of a user in many rooms with history", run: (*bench).initialSync},
	{name: "messages", description: "backwards /messages over a room filled by concurrent senders, checked for completeness and order", run: (*bench).messagesScenario},
	{name: "federation", description: "one room on two servers (1 = --url, 2 = --url2): delivery each way one message at a time, then a burst from senders on both, checked for completeness and order", run: (*bench).federation, explicit: true},
	{name: "big-join", description: "joining a remote room with many members and much state, served by a fake resident server", run: (*bench).bigJoin, explicit: true},
}

const (
	// deliveryTimeout is how long a message may take to reach the
	// receiver before it counts as lost.
	deliveryTimeout = 30 * time.Second
	// syncTimeoutMS is what clients usually long-poll with.
	syncTimeoutMS = 30000
	// deliveryTimelineLimit bounds the receiver's timeline, as clients'
	// filters do.
	deliveryTimelineLimit = 50
	pageLimit             = 50
)

// tally collects failures of one scenario: failed requests (errors) and
// failed checks (problems). Only the first few request errors are kept
// verbatim; a broken server would otherwise print thousands of them.
type tally struct {
	mu       sync.Mutex
	errors   int
	problems []string
}

const (
	keptErrors = 5
	// maxErrors ends a scenario early: past this many failed requests its
	// figures mean nothing and finishing would only take time.
	maxErrors = 50
)

func (t *tally) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errors++
	if t.errors <= keptErrors {
		t.problems = append(t.problems, err.Error())
	}
}

func (t *tally) problem(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
}

func (t *tally) tooMany() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.errors >= maxErrors
}

// parallel calls fn(w, i) for every i in [0, n) from `workers`
// goroutines; worker w handles whichever index comes next, so that slow
// workers do not leave a tail of unsent messages.
func parallel(ctx context.Context, n, workers int, t *tally, fn func(w, i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil && !t.tooMany() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(w, i)
			}
		})
	}
	wg.Wait()
}

// samples is a latency collection shared by workers.
type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

// marker starts the text of every message a scenario sends; with the run
// ID in it, messages of other runs or scenarios are never mistaken for
// this one's.
func (b *bench) marker(scenario string) string {
	return "veche-bench " + b.runID + " " + scenario + " "
}

// body is a message text unique within the run, so that a receiver can
// tell which message it sees.
func (b *bench) body(scenario string, sender, seq int) string {
	return fmt.Sprintf("%s%d/%d", b.marker(scenario), sender, seq)
}

// room creates a room owned by owner and joins members to it.
func (b *bench) room(ctx context.Context, owner *user, members []*user, name string) (string, error) {
	roomID, err := b.c.createRoom(ctx, owner, b.runID+" "+name)
	if err != nil {
		return "", err
	}
	var t tally
	parallel(ctx, len(members), b.opts.senders, &t, func(_, i int) {
		if members[i] != owner {
			if err := b.c.join(ctx, members[i], roomID); err != nil {
				t.fail(err)
			}
		}
	})
	if t.errors > 0 {
		return "", fmt.Errorf("joining %s: %s", name, t.problems[0])
	}
	return roomID, ctx.Err()
}

func (b *bench) sendOne(ctx context.Context, r *Result, t *tally) error {
	u := b.pool[0]
	roomID, err := b.room(ctx, u, b.pool, "send-one")
	if err != nil {
		return err
	}
	var lat []time.Duration
	start := time.Now()
	for i := 0; i < b.opts.messages && ctx.Err() == nil && !t.tooMany(); i++ {
		if _, a, err := b.c.send(ctx, u, roomID, b.body("send-one", 0, i)); err != nil {
			t.fail(err)
		} else {
			lat = append(lat, a.elapsed)
		}
	}
	wall := time.Since(start)
	r.WallSeconds = wall.Seconds()
	r.latency("send", summarize(lat, wall))
	r.figure("room_members", "room members", float64(len(b.pool)), "")
	return ctx.Err()
}

func (b *bench) sendMany(ctx context.Context, r *Result, t *tally) error {
	senders := b.pool[:b.opts.senders]
	roomID, err := b.room(ctx, senders[0], b.pool, "send-many")
	if err != nil {
		return err
	}
	var lat samples
	seq := make([]int, len(senders)) // per worker, so no lock
	start := time.Now()
	parallel(ctx, b.opts.messages, len(senders), t, func(w, _ int) {
		_, a, err := b.c.send(ctx, senders[w], roomID, b.body("send-many", w, seq[w]))
		seq[w]++
		if err != nil {
			t.fail(err)
			return
		}
		lat.add(a.elapsed)
	})
	wall := time.Since(start)
	r.WallSeconds = wall.Seconds()
	r.latency("send", summarize(lat.d, wall))
	r.figure("senders", "concurrent senders", float64(len(senders)), "")
	return ctx.Err()
}

// delivery measures what a user waits for: from the moment a sender
// starts sending until the receiver's long-polling /sync answer with the
// message is parsed. Each message is sent once the previous one arrived,
// so the figure is the latency of an idle server waking a long-poll, not
// of a queue. The receiver also checks that every message arrives once
// and in order.
func (b *bench) delivery(ctx context.Context, r *Result, t *tally) error {
	sender, receiver := b.pool[0], b.pool[1]
	roomID, err := b.room(ctx, sender, b.pool, "delivery")
	if err != nil {
		return err
	}
	d, err := b.measureDelivery(ctx, t, deliveryPath{
		sendC: b.c, sender: sender, recvC: b.c, receiver: receiver,
		roomID: roomID, prefix: b.marker("delivery") + "0/", n: b.opts.messages,
	})
	if err != nil {
		return err
	}
	r.WallSeconds = d.wall.Seconds()
	r.latency("delivery", summarize(d.delivery, d.wall))
	r.latency("send", summarize(d.send, 0))
	r.figure("syncs", "/sync answers", float64(d.syncs), "")
	r.figure("lost", "lost", float64(d.lost), "")
	r.figure("limited", "limited timelines", float64(d.limited), "")
	return ctx.Err()
}

// deliveryPath is one sender and one receiver in a room, each on its own
// server's client (the same for a single server).
type deliveryPath struct {
	sendC, recvC     *client
	sender, receiver *user
	roomID           string
	// prefix starts every message body; a sequence number follows.
	prefix string
	n      int
	// where names the receiver's side in problems ("" on one server).
	where string
}

type deliveryOutcome struct {
	delivery, send []time.Duration
	wall           time.Duration
	syncs, limited int64
	lost           int
}

// receiverFilter uploads the receiver's sync filter: only the room's
// timeline, as a client showing one room would ask.
func receiverFilter(ctx context.Context, c *client, u *user, roomID string, timelineLimit int) (string, error) {
	return c.uploadFilter(ctx, u, map[string]any{
		"room": map[string]any{
			"rooms":        []string{roomID},
			"timeline":     map[string]any{"limit": timelineLimit},
			"state":        map[string]any{"lazy_load_members": true},
			"ephemeral":    map[string]any{"not_types": []string{"*"}},
			"account_data": map[string]any{"not_types": []string{"*"}},
		},
		"presence":     map[string]any{"not_types": []string{"*"}},
		"account_data": map[string]any{"not_types": []string{"*"}},
	})
}

// measureDelivery sends p.n messages one after another, each once the
// previous one reached the receiver's long-polling /sync (or was given
// up as lost after deliveryTimeout).
func (b *bench) measureDelivery(ctx context.Context, t *tally, p deliveryPath) (*deliveryOutcome, error) {
	filterID, err := receiverFilter(ctx, p.recvC, p.receiver, p.roomID, deliveryTimelineLimit)
	if err != nil {
		return nil, err
	}
	first, _, err := p.recvC.sync(ctx, p.receiver, "", filterID, 0)
	if err != nil {
		return nil, err
	}
	where := ""
	if p.where != "" {
		where = " on " + p.where
	}

	var (
		mu      sync.Mutex
		waiting = map[string]chan time.Time{}
		seen    = map[string]int{}
	)
	var syncs, limited atomic.Int64
	recvCtx, stopRecv := context.WithCancel(ctx)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		since, last := first.NextBatch, -1
		for recvCtx.Err() == nil {
			resp, _, err := p.recvC.sync(recvCtx, p.receiver, since, filterID, syncTimeoutMS)
			if recvCtx.Err() != nil {
				return
			}
			if err != nil {
				t.fail(err)
				if t.tooMany() {
					return
				}
				_ = sleep(recvCtx, 100*time.Millisecond) // a failing server should not be hammered
				continue
			}
			now := time.Now()
			syncs.Add(1)
			room := resp.Rooms.Join[p.roomID]
			if room.Timeline.Limited {
				limited.Add(1)
			}
			for _, ev := range room.Timeline.Events {
				seq, ok := strings.CutPrefix(ev.Content.Body, p.prefix)
				if ev.Type != "m.room.message" || !ok {
					continue
				}
				n, _ := strconv.Atoi(seq)
				mu.Lock()
				seen[ev.Content.Body]++
				count, ch := seen[ev.Content.Body], waiting[ev.Content.Body]
				mu.Unlock()
				switch {
				case count > 1:
					t.problem("/sync%s delivered message %d (%s) %d times", where, n, ev.EventID, count)
				case n < last:
					t.problem("/sync%s delivered message %d (%s) after message %d", where, n, ev.EventID, last)
				}
				last = max(last, n)
				if ch != nil && count == 1 {
					ch <- now
				}
			}
			since = resp.NextBatch
		}
	}()

	out := &deliveryOutcome{}
	start := time.Now()
	for i := 0; i < p.n && ctx.Err() == nil && !t.tooMany(); i++ {
		body := p.prefix + strconv.Itoa(i)
		arrived := make(chan time.Time, 1)
		mu.Lock()
		waiting[body] = arrived
		mu.Unlock()
		sent := time.Now()
		eventID, a, err := p.sendC.send(ctx, p.sender, p.roomID, body)
		if err != nil {
			t.fail(err)
			continue
		}
		out.send = append(out.send, a.elapsed)
		timer := time.NewTimer(deliveryTimeout)
		select {
		case at := <-arrived:
			out.delivery = append(out.delivery, at.Sub(sent))
		case <-timer.C:
			out.lost++
			if out.lost <= keptErrors {
				t.problem("LOST: message %d (%s) did not reach the receiver's /sync%s within %s", i, eventID, where, deliveryTimeout)
			}
		case <-ctx.Done():
		}
		timer.Stop()
	}
	out.wall = time.Since(start)
	stopRecv()
	<-recvDone

	if out.lost > keptErrors {
		t.problem("LOST: %d messages in all did not reach the receiver's /sync%s", out.lost, where)
	}
	out.syncs, out.limited = syncs.Load(), limited.Load()
	return out, ctx.Err()
}

// initialSync measures what a client logging in on a new device waits
// for: the first /sync of a user in many rooms with some history, with
// the server's default filter.
func (b *bench) initialSync(ctx context.Context, r *Result, t *tally) error {
	fresh, err := b.reg.register(ctx, b.opts.prefix+"-fresh")
	if err != nil {
		return err
	}
	// Rooms are created and filled from several users at once; that is
	// set-up, not what is measured.
	setup := time.Now()
	var setupErrs tally
	parallel(ctx, b.opts.rooms, b.opts.senders, &setupErrs, func(_, i int) {
		owner := b.pool[i%len(b.pool)]
		roomID, err := b.room(ctx, owner, []*user{owner, fresh}, fmt.Sprintf("initial-sync %d", i))
		if err != nil {
			setupErrs.fail(err)
			return
		}
		for j := range b.opts.history {
			if _, _, err := b.c.send(ctx, owner, roomID, b.body("initial-sync", i, j)); err != nil {
				setupErrs.fail(err)
				return
			}
		}
	})
	if setupErrs.errors > 0 {
		return fmt.Errorf("creating the rooms (%d failures): %s", setupErrs.errors, setupErrs.problems[0])
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.figure("setup_seconds", "set-up", time.Since(setup).Seconds(), "s")

	var lat []time.Duration
	var size, rooms, events int
	var firstEvents string
	start := time.Now()
	for i := 0; i < b.opts.initialSyncs && ctx.Err() == nil; i++ {
		resp, a, err := b.c.sync(ctx, fresh, "", "", 0)
		if err != nil {
			t.fail(err)
			continue
		}
		lat = append(lat, a.elapsed)
		if i == 0 {
			r.figure("first_ms", "first (cold)", ms(a.elapsed), "ms")
		}
		size = max(size, a.bytes)
		rooms, events = len(resp.Rooms.Join), 0
		var ids []string
		for roomID, jr := range resp.Rooms.Join {
			events += len(jr.Timeline.Events) + len(jr.State.Events)
			for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
				ids = append(ids, roomID+" "+ev.EventID)
			}
		}
		if rooms != b.opts.rooms {
			t.problem("initial /sync %d lists %d joined rooms, want %d", i+1, rooms, b.opts.rooms)
		}
		// Nothing happens in these rooms between the syncs, so each must
		// list the same events. (Sizes may differ: unsigned.age grows.)
		slices.Sort(ids)
		if joined := strings.Join(ids, ","); i == 0 {
			firstEvents = joined
		} else if joined != firstEvents {
			t.problem("initial /sync %d lists other events than the first", i+1)
		}
	}
	r.WallSeconds = time.Since(start).Seconds()
	r.latency("initial sync", summarize(lat, 0))
	r.figure("response_bytes", "response", float64(size), "bytes")
	r.figure("rooms", "joined rooms", float64(rooms), "")
	r.figure("events", "events (state+timeline)", float64(events), "")
	return ctx.Err()
}

// sentEvent is a message the server acknowledged, with when the request
// started and when its answer arrived.
type sentEvent struct {
	id         string
	start, end time.Time
}

func (b *bench) messagesScenario(ctx context.Context, r *Result, t *tally) error {
	senders := b.pool[:b.opts.senders]
	roomID, err := b.room(ctx, senders[0], senders, "messages")
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		sent []sentEvent
	)
	seq := make([]int, len(senders))
	fillStart := time.Now()
	parallel(ctx, b.opts.messages, len(senders), t, func(w, _ int) {
		start := time.Now()
		id, _, err := b.c.send(ctx, senders[w], roomID, b.body("messages", w, seq[w]))
		end := time.Now()
		seq[w]++
		if err != nil {
			t.fail(err)
			return
		}
		mu.Lock()
		sent = append(sent, sentEvent{id: id, start: start, end: end})
		mu.Unlock()
	})
	fill := time.Since(fillStart)
	if err := ctx.Err(); err != nil {
		return err
	}
	r.figure("fill_per_second", "filled at", float64(len(sent))/fill.Seconds(), "/s")

	var (
		lat  []time.Duration
		seen []event
		from string
	)
	// Every page must move on; a server that hands back the same token or
	// pages forever is reported rather than followed.
	maxPages := b.opts.messages/pageLimit + 100
	start := time.Now()
	for page := 0; ; page++ {
		if page == maxPages {
			t.problem("pagination did not end after %d pages", page)
			break
		}
		resp, a, err := b.c.messages(ctx, senders[0], roomID, from, pageLimit)
		if err != nil {
			t.fail(err)
			break
		}
		lat = append(lat, a.elapsed)
		seen = append(seen, resp.Chunk...)
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		if resp.End == from {
			t.problem("page %d answered end = its from token %q", page+1, from)
			break
		}
		from = resp.End
	}
	wall := time.Since(start)
	for _, p := range checkPagination(sent, seen, b.marker("messages")) {
		t.problem("%s", p)
	}
	r.WallSeconds = wall.Seconds()
	r.latency("page", summarize(lat, wall))
	r.figure("events", "events paginated", float64(len(seen)), "")
	r.figure("events_per_second", "paginated at", float64(len(seen))/wall.Seconds(), "/s")
	r.figure("checked", "messages checked", float64(len(sent)), "")
	return ctx.Err()
}

// checkPagination compares the events backwards pagination returned,
// newest first, with the messages the senders had acknowledged: each must
// come back exactly once, nothing else with this run's marker may, the
// walk must reach the room's creation, and the order must respect
// causality — a message whose send was answered before another's began
// must come first, whichever senders sent them.
func checkPagination(sent []sentEvent, seen []event, marker string) []string {
	var problems []string
	report := func(what string, list []string) {
		if len(list) == 0 {
			return
		}
		ex := list[:min(len(list), 3)]
		problems = append(problems, fmt.Sprintf("%d %s, e.g. %s", len(list), what, strings.Join(ex, ", ")))
	}

	count := map[string]int{}
	var dups []string
	for _, ev := range seen {
		count[ev.EventID]++
		if count[ev.EventID] == 2 {
			dups = append(dups, ev.EventID)
		}
	}
	report("events returned more than once", dups)

	byID := map[string]*sentEvent{}
	var missing []string
	for i := range sent {
		byID[sent[i].id] = &sent[i]
		if count[sent[i].id] == 0 {
			missing = append(missing, sent[i].id)
		}
	}
	report("sent messages missing from pagination", missing)

	var unknown []string
	for _, ev := range seen {
		if ev.Type == "m.room.message" && strings.HasPrefix(ev.Content.Body, marker) && byID[ev.EventID] == nil {
			unknown = append(unknown, ev.EventID)
		}
	}
	report("messages returned that no send acknowledged", unknown)

	if len(seen) == 0 || seen[len(seen)-1].Type != "m.room.create" {
		problems = append(problems, "pagination ended before the room's m.room.create event")
	}

	forward := slices.Clone(seen)
	slices.Reverse(forward)
	var (
		disorder  []string
		latest    *sentEvent // the latest-started message so far
		processed = map[string]bool{}
	)
	for _, ev := range forward {
		s := byID[ev.EventID]
		if s == nil || processed[ev.EventID] {
			continue
		}
		processed[ev.EventID] = true
		if latest != nil && latest.start.After(s.end) {
			disorder = append(disorder, fmt.Sprintf("%s before %s", latest.id, s.id))
		}
		if latest == nil || s.start.After(latest.start) {
			latest = s
		}
	}
	report("messages out of causal order (the second was answered before the first was sent)", disorder)
	return problems
}
