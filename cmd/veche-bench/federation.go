package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The federation scenario: two servers, users on both, one room.

// side is one server of the federation scenario.
type side struct {
	label  string // "1" or "2", for latency names
	server string // server name, from the users' IDs
	c      *client
	users  []*user
}

// serverOf is the server name part of a user ID.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// joinVia joins a room through the given servers (POST /join/{roomId}),
// which a server that is not yet in the room needs to find it. The spec
// names the parameter via since v1.12; older servers read server_name.
func (c *client) joinVia(ctx context.Context, u *user, roomID string, servers []string) (answer, error) {
	q := url.Values{"via": servers, "server_name": servers}
	return c.do(ctx, "POST", clientV3+"/join/"+url.PathEscape(roomID)+"?"+q.Encode(), u.Token, map[string]any{}, nil)
}

// joinedMembers is GET /rooms/{roomId}/joined_members.
func (c *client) joinedMembers(ctx context.Context, u *user, roomID string) (map[string]any, error) {
	var out struct {
		Joined map[string]any `json:"joined"`
	}
	_, err := c.do(ctx, "GET", roomPath(roomID)+"/joined_members", u.Token, nil, &out)
	return out.Joined, err
}

// waitMembers polls until u's server lists every one of want as joined.
// Joins travel between servers on their own schedule; there is nothing
// to long-poll for them that every server offers, so this polls gently.
func waitMembers(ctx context.Context, c *client, u *user, roomID string, want []*user, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		joined, err := c.joinedMembers(ctx, u, roomID)
		if err != nil {
			return err
		}
		missing := 0
		for _, w := range want {
			if _, ok := joined[w.ID]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still lacks %d of %d joined members after %s", serverOf(u.ID), missing, len(want), limit)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func (b *bench) federation(ctx context.Context, r *Result, t *tally) error {
	n := b.opts.senders
	if _, err := b.c2.versions(ctx); err != nil {
		return fmt.Errorf("--url2: %w", err)
	}
	fmt.Fprintf(b.log, "  registering %d users on %s (%s)…\n", n, b.opts.url2, b.reg2.method())
	users2 := make([]*user, n)
	var regErrs tally
	parallel(ctx, n, min(n, 4), &regErrs, func(_, i int) {
		u, err := b.reg2.register(ctx, fmt.Sprintf("%s-f%d", b.opts.prefix, i))
		if err != nil {
			regErrs.fail(err)
			return
		}
		users2[i] = u
	})
	if regErrs.errors > 0 {
		return errors.New(regErrs.problems[0])
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s1 := &side{label: "1", server: serverOf(b.pool[0].ID), c: b.c, users: b.pool[:n]}
	s2 := &side{label: "2", server: serverOf(users2[0].ID), c: b.c2, users: users2}
	if s1.server == s2.server {
		return fmt.Errorf("--url and --url2 are the same server (%s)", s1.server)
	}
	fmt.Fprintf(b.log, "  server 1 is %s, server 2 is %s\n", s1.server, s2.server)

	roomID, err := b.room(ctx, s1.users[0], s1.users, "federation")
	if err != nil {
		return err
	}
	// The second server's users join over federation: the first through
	// make_join/send_join, the others perhaps locally once their server
	// is in the room.
	var joinLat samples
	joinStart := time.Now()
	var joinErrs tally
	parallel(ctx, n, n, &joinErrs, func(_, i int) {
		a, err := s2.c.joinVia(ctx, s2.users[i], roomID, []string{s1.server})
		if err != nil {
			joinErrs.fail(err)
			return
		}
		joinLat.add(a.elapsed)
	})
	if joinErrs.errors > 0 {
		return fmt.Errorf("joining the room over federation: %s", joinErrs.problems[0])
	}
	if err := waitMembers(ctx, s1.c, s1.users[0], roomID, s2.users, deliveryTimeout); err != nil {
		return err
	}
	if err := waitMembers(ctx, s2.c, s2.users[0], roomID, s1.users, deliveryTimeout); err != nil {
		return err
	}
	r.latency("remote join", summarize(joinLat.d, 0))
	r.figure("joins_visible_seconds", "all joins seen by both", time.Since(joinStart).Seconds(), "s")

	start := time.Now()
	// (a) Latency: one message at a time, each way.
	for _, dir := range [][2]*side{{s1, s2}, {s2, s1}} {
		from, to := dir[0], dir[1]
		fmt.Fprintf(b.log, "  delivery %s → %s…\n", from.server, to.server)
		d, err := b.measureDelivery(ctx, t, deliveryPath{
			sendC: from.c, sender: from.users[0], recvC: to.c, receiver: to.users[0], roomID: roomID,
			prefix: b.marker("federation") + "seq" + from.label + "/", n: b.opts.messages, where: to.server,
		})
		if err != nil {
			return err
		}
		name := "delivery " + from.label + "→" + to.label
		r.latency(name, summarize(d.delivery, d.wall))
		r.figure("lost_"+from.label+"_"+to.label, "lost "+from.label+"→"+to.label, float64(d.lost), "")
		if t.tooMany() {
			return nil
		}
	}

	// (b) Throughput: every sender on both sides at once.
	fmt.Fprintf(b.log, "  burst: %d senders on each server, %d messages in all…\n", n, b.opts.messages)
	if err := b.federationBurst(ctx, r, t, roomID, s1, s2); err != nil {
		return err
	}
	r.WallSeconds = time.Since(start).Seconds()
	return ctx.Err()
}

// burstTimelineLimit is the burst receivers' timeline limit: high (it
// is Veche's maximum), so that /sync itself delivers every message and
// limited timelines, whose gaps need /messages, stay rare.
const burstTimelineLimit = 1000

// burstMessage is one message of the burst, as its sender saw it.
type burstMessage struct {
	eventID    string
	start, end time.Time
}

// burstReceiver follows one server's /sync during the burst and records
// when each message from the other server became visible there.
type burstReceiver struct {
	s, other *side
	roomID   string
	prefix   string // the other side's burst messages start with this
	filterID string
	since    string

	mu sync.Mutex
	// arrived: body → when it was first seen.
	arrived map[string]time.Time
	// lastSeq is the last sequence number seen per sender (worker).
	lastSeq  map[int]int
	disorder []string
	dups     []string
	// seenIDs are every event this receiver has seen, inSync those /sync
	// timelines delivered; preBurst are those it saw before the burst
	// began, where filling a gap may stop.
	seenIDs  map[string]bool
	inSync   map[string]bool
	preBurst map[string]bool
	syncs    int
	limited  int
	gapPages int
	progress chan struct{}
}

func (b *bench) federationBurst(ctx context.Context, r *Result, t *tally, roomID string, s1, s2 *side) error {
	marker := b.marker("federation") + "burst"
	recv := map[*side]*burstReceiver{}
	for _, pair := range [][2]*side{{s1, s2}, {s2, s1}} {
		s, other := pair[0], pair[1]
		rc := &burstReceiver{
			s: s, other: other, roomID: roomID, prefix: marker + other.label + "-",
			arrived: map[string]time.Time{}, lastSeq: map[int]int{},
			seenIDs: map[string]bool{}, inSync: map[string]bool{}, preBurst: map[string]bool{}, progress: make(chan struct{}, 1),
		}
		var err error
		if rc.filterID, err = receiverFilter(ctx, s.c, s.users[0], roomID, b.opts.burstTimelineLimit); err != nil {
			return err
		}
		first, _, err := s.c.sync(ctx, s.users[0], "", rc.filterID, 0)
		if err != nil {
			return err
		}
		rc.since = first.NextBatch
		// What the first answer showed is not a gap to fill later.
		for _, ev := range first.Rooms.Join[roomID].Timeline.Events {
			rc.seenIDs[ev.EventID] = true
			rc.preBurst[ev.EventID] = true
		}
		recv[s] = rc
	}
	recvCtx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	var recvWG sync.WaitGroup
	for _, rc := range recv {
		recvWG.Go(func() { rc.run(recvCtx, t) })
	}

	// Each side sends its share; within a side, worker w is one user
	// sending its messages in sequence, so each sender's messages are
	// causally ordered.
	var (
		mu   sync.Mutex
		sent = map[string]burstMessage{} // body → message
		lat  samples
	)
	share := map[*side]int{s1: (b.opts.messages + 1) / 2, s2: b.opts.messages / 2}
	start := time.Now()
	var sendWG sync.WaitGroup
	for _, s := range []*side{s1, s2} {
		sendWG.Go(func() {
			seq := make([]int, len(s.users))
			parallel(ctx, share[s], len(s.users), t, func(w, _ int) {
				body := fmt.Sprintf("%s%s-%d/%d", marker, s.label, w, seq[w])
				seq[w]++
				st := time.Now()
				id, a, err := s.c.send(ctx, s.users[w], roomID, body)
				if err != nil {
					t.fail(err)
					return
				}
				lat.add(a.elapsed)
				mu.Lock()
				sent[body] = burstMessage{eventID: id, start: st, end: time.Now()}
				mu.Unlock()
			})
		})
	}
	sendWG.Wait()
	sendWall := time.Since(start)

	// Wait until every acknowledged message is visible on the other
	// server, or nothing new arrived for deliveryTimeout.
	missing := func() int {
		n := 0
		for body := range sent {
			to := recv[s2]
			if strings.HasPrefix(body, marker+"2-") {
				to = recv[s1]
			}
			to.mu.Lock()
			_, ok := to.arrived[body]
			to.mu.Unlock()
			if !ok {
				n++
			}
		}
		return n
	}
	idle := time.NewTimer(deliveryTimeout)
	defer idle.Stop()
wait:
	for missing() > 0 && ctx.Err() == nil && !t.tooMany() {
		select {
		case <-recv[s1].progress:
		case <-recv[s2].progress:
		case <-idle.C:
			break wait
		case <-ctx.Done():
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(deliveryTimeout)
	}
	stopRecv()
	recvWG.Wait()

	// Figures and checks, per direction.
	var lastArrival time.Time
	total := 0
	for _, pair := range [][2]*side{{s1, s2}, {s2, s1}} {
		from, to := pair[0], pair[1]
		d := recv[to].judge(sent, marker+from.label+"-", t)
		total += d.sent
		if d.last.After(lastArrival) {
			lastArrival = d.last
		}
		dir := from.label + "→" + to.label
		r.latency("burst "+dir, summarize(d.latency, 0))
		r.figure("burst_lost_"+from.label+"_"+to.label, "burst lost "+dir, float64(d.lost), "")
	}
	for _, s := range []*side{s1, s2} {
		rc := recv[s]
		r.figure("syncs_"+s.label, "/sync answers on "+s.label, float64(rc.syncs), "")
		r.figure("limited_"+s.label, "limited timelines on "+s.label, float64(rc.limited), "")
		r.figure("gap_pages_"+s.label, "gap pages on "+s.label, float64(rc.gapPages), "")
	}
	r.latency("burst send", summarize(lat.d, sendWall))
	if !lastArrival.IsZero() {
		visible := lastArrival.Sub(start)
		r.figure("burst_visible_seconds", "burst all visible after", visible.Seconds(), "s")
		r.figure("burst_delivered_per_second", "burst delivered at", float64(total)/visible.Seconds(), "/s")
	}
	return ctx.Err()
}

// burstDirection is what one receiver saw of the other side's burst.
type burstDirection struct {
	sent, lost int
	latency    []time.Duration // from the send's start to visibility
	last       time.Time       // the last arrival
}

// judge compares the messages sent with prefix (the other side's) with
// what this receiver saw, and reports lost, repeated and disordered
// messages as problems.
func (rc *burstReceiver) judge(sent map[string]burstMessage, prefix string, t *tally) burstDirection {
	var d burstDirection
	var lost []string
	for body, m := range sent {
		if !strings.HasPrefix(body, prefix) {
			continue
		}
		d.sent++
		at, ok := rc.arrived[body]
		if !ok {
			lost = append(lost, m.eventID)
			continue
		}
		d.latency = append(d.latency, at.Sub(m.start))
		if at.After(d.last) {
			d.last = at
		}
	}
	d.lost = len(lost)
	slices.Sort(lost)
	from, to := rc.other.server, rc.s.server
	if len(lost) > 0 {
		t.problem("LOST: %d of %d burst messages sent on %s never reached %s, e.g. %s",
			len(lost), d.sent, from, to, strings.Join(lost[:min(3, len(lost))], ", "))
	}
	if len(rc.dups) > 0 {
		t.problem("%s showed %d burst messages more than once, e.g. %s", to, len(rc.dups), strings.Join(rc.dups[:min(3, len(rc.dups))], ", "))
	}
	if len(rc.disorder) > 0 {
		t.problem("%s showed %d burst messages out of their sender's order, e.g. %s", to, len(rc.disorder), strings.Join(rc.disorder[:min(3, len(rc.disorder))], "; "))
	}
	return d
}

// run long-polls the receiver's /sync until ctx ends.
func (rc *burstReceiver) run(ctx context.Context, t *tally) {
	u := rc.s.users[0]
	for ctx.Err() == nil {
		resp, _, err := rc.s.c.sync(ctx, u, rc.since, rc.filterID, syncTimeoutMS)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			t.fail(err)
			if t.tooMany() {
				return
			}
			_ = sleep(ctx, 100*time.Millisecond)
			continue
		}
		now := time.Now()
		rc.syncs++
		room := resp.Rooms.Join[rc.roomID]
		// The timeline first: an event in it may also lie behind its
		// prev_batch (below), and is best judged as /sync gave it.
		rc.take(room.Timeline.Events, now, false)
		if room.Timeline.Limited {
			// Events between the last answer and this timeline were left
			// out: fetch them backwards, as a client filling the gap.
			rc.limited++
			gap, err := rc.fillGap(ctx, room.Timeline.PrevBatch)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				t.fail(err)
			}
			rc.take(gap, now, true)
		}
		rc.since = resp.NextBatch
	}
}

// fillGap pages backwards from a limited timeline's prev_batch and
// returns the events not seen yet, oldest first. /sync lists events in
// the order the server received them, /messages in the room's (causal)
// order, and with two servers the two differ: a gap's events may sit
// behind events seen earlier. So the walk goes on to the events seen
// before the burst began, which every burst message causally follows.
func (rc *burstReceiver) fillGap(ctx context.Context, from string) ([]event, error) {
	var gap []event
	for from != "" {
		page, _, err := rc.s.c.messages(ctx, rc.s.users[0], rc.roomID, from, pageLimit)
		if err != nil {
			return nil, err
		}
		rc.gapPages++
		for _, ev := range page.Chunk {
			if rc.preBurst[ev.EventID] {
				slices.Reverse(gap)
				return gap, nil
			}
			if !rc.seenIDs[ev.EventID] {
				gap = append(gap, ev)
			}
		}
		if len(page.Chunk) == 0 || page.End == from {
			break
		}
		from = page.End
	}
	slices.Reverse(gap)
	return gap, nil
}

// take records the events of one /sync timeline (in the order the
// server gave them) or of a gap behind it. Arrival counts either way;
// duplicates and each sender's order are judged on /sync timelines
// alone, which list events in the server's stream order. A gap, read
// through /messages in causal order, may hold events that arrived after
// the /sync answer and that the next timeline lists again: that is a
// race of the client, not a repetition by the server.
func (rc *burstReceiver) take(events []event, now time.Time, gap bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	news := false
	for _, ev := range events {
		if gap && rc.seenIDs[ev.EventID] {
			continue
		}
		rc.seenIDs[ev.EventID] = true
		rest, ok := strings.CutPrefix(ev.Content.Body, rc.prefix)
		if ev.Type != "m.room.message" || !ok {
			continue
		}
		if _, ok := rc.arrived[ev.Content.Body]; !ok {
			rc.arrived[ev.Content.Body] = now
			news = true
		}
		if gap {
			continue
		}
		if rc.inSync[ev.EventID] {
			rc.dups = append(rc.dups, ev.EventID)
			continue
		}
		rc.inSync[ev.EventID] = true
		worker, seqStr, _ := strings.Cut(rest, "/")
		w, err1 := strconv.Atoi(worker)
		seq, err2 := strconv.Atoi(seqStr)
		if err1 != nil || err2 != nil {
			continue
		}
		if last, ok := rc.lastSeq[w]; ok && seq < last {
			rc.disorder = append(rc.disorder, fmt.Sprintf("sender %s-%d's message %d (%s) after its message %d", rc.other.label, w, seq, ev.EventID, last))
		}
		rc.lastSeq[w] = max(rc.lastSeq[w], seq)
	}
	if news {
		select {
		case rc.progress <- struct{}{}:
		default:
		}
	}
}
