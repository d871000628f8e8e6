package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// bigJoin measures joining a room held by another server that has many
// members and much state: the fake resident server (fakeserver.go)
// generates the room, a user of the server under test joins it through
// the fake's server name, and the run reports how long the join took,
// when the room showed up in the user's long-polling /sync, and what it
// cost the server in memory.
func (b *bench) bigJoin(ctx context.Context, r *Result, t *tally) error {
	o := b.opts
	fmt.Fprintf(b.log, "  generating a room of %d members and %d state events for %s…\n", o.bigMembers, o.bigState, o.fakeServerName)
	fake, err := newFakeServer(o.fakeServerName, fakeRoom{
		Members: o.bigMembers, State: o.bigState, Version: gomatrixserverlib.RoomVersion(o.bigRoomVersion), Tag: b.runID,
	})
	if err != nil {
		return fmt.Errorf("generating the big room: %w", err)
	}
	ln := o.fakeListener
	if ln == nil {
		if ln, err = net.Listen("tcp", o.fakeListen); err != nil {
			return fmt.Errorf("--fake-listen: %w", err)
		}
	}
	if err := fake.listen(ln); err != nil {
		ln.Close()
		return err
	}
	defer fake.close()
	fmt.Fprintf(b.log, "  fake server %s listening on %s (map it in the server's federation.hosts); %s\n",
		o.fakeServerName, ln.Addr(), fake.describe())
	stateEvents := fake.stateCount()
	r.figure("generate_seconds", "room generated in", fake.GenerateSeconds, "s")
	r.figure("state_events", "state events", float64(stateEvents), "")

	u := b.pool[0]
	filterID, err := u.lazyFilter(ctx, b.c)
	if err != nil {
		return err
	}
	first, _, err := b.c.sync(ctx, u, "", filterID, 0)
	if err != nil {
		return err
	}

	// The user's client long-polls, as it would while its user joins.
	type appearance struct {
		at          time.Time
		bytes       int
		stateEvents int
	}
	appeared := make(chan appearance, 1)
	syncCtx, stopSync := context.WithCancel(ctx)
	defer stopSync()
	var syncWG sync.WaitGroup
	syncWG.Go(func() {
		since := first.NextBatch
		for syncCtx.Err() == nil {
			resp, a, err := b.c.sync(syncCtx, u, since, filterID, syncTimeoutMS)
			if syncCtx.Err() != nil {
				return
			}
			if err != nil {
				t.fail(err)
				if t.tooMany() {
					return
				}
				_ = sleep(syncCtx, 100*time.Millisecond)
				continue
			}
			if jr, ok := resp.Rooms.Join[fake.roomID]; ok {
				appeared <- appearance{at: time.Now(), bytes: a.bytes, stateEvents: len(jr.State.Events)}
				return
			}
			since = resp.NextBatch
		}
	})

	// Memory: VmHWM is reset (when allowed) so that it becomes the peak of
	// the join; a sampler watches VmRSS as well, in case it is not.
	var sampledPeak atomic.Int64
	peakReset := false
	var sampleWG sync.WaitGroup
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	if o.pid > 0 {
		peakReset = resetPeak(o.pid) == nil
		sampleWG.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				if s, err := readProc(o.pid); err == nil && s.RSSKiB > sampledPeak.Load() {
					sampledPeak.Store(s.RSSKiB)
				}
				select {
				case <-tick.C:
				case <-sampleCtx.Done():
					return
				}
			}
		})
	}

	fmt.Fprintf(b.log, "  %s joins %s via %s…\n", u.ID, fake.roomID, o.fakeServerName)
	start := time.Now()
	_, err = b.c.joinVia(ctx, u, fake.roomID, []string{o.fakeServerName})
	joined := time.Now()
	if err != nil {
		stopSync()
		syncWG.Wait()
		return fmt.Errorf("joining the big room: %w", err)
	}
	r.latency("join", summarize([]time.Duration{joined.Sub(start)}, 0))
	var seen appearance
	timer := time.NewTimer(deliveryTimeout)
	select {
	case seen = <-appeared:
		r.latency("join → /sync", summarize([]time.Duration{seen.at.Sub(start)}, 0))
	case <-timer.C:
		t.problem("the joined room did not appear in the user's /sync within %s of the join's answer", deliveryTimeout)
	case <-ctx.Done():
	}
	timer.Stop()
	stopSync()
	syncWG.Wait()
	stopSampling()
	sampleWG.Wait()
	r.WallSeconds = time.Since(start).Seconds()

	if tj, err := fake.lastJoin(); err != nil {
		t.problem("%v", err)
	} else {
		r.figure("before_make_join_ms", "until make_join", ms(tj.makeJoin.Sub(start)), "ms")
		r.figure("send_join_answer_ms", "send_join answered in", ms(tj.sendJoinDone.Sub(tj.sendJoin)), "ms")
		r.figure("after_send_join_seconds", "join processed after send_join in", joined.Sub(tj.sendJoinDone).Seconds(), "s")
		r.figure("send_join_bytes", "send_join answer", float64(tj.answerBytes), "bytes")
	}
	if seen.bytes > 0 {
		r.figure("sync_bytes", "/sync answer with the room", float64(seen.bytes), "bytes")
		r.figure("sync_state_events", "its state events (lazy members)", float64(seen.stateEvents), "")
	}
	if o.pid > 0 {
		label := "peak RSS during the join"
		if !peakReset {
			label = "peak RSS sampled during the join"
		}
		peak := sampledPeak.Load()
		if peakReset {
			if s, err := readProc(o.pid); err == nil {
				peak = max(peak, s.HWMKiB)
			}
		}
		r.figure("join_peak_rss_kib", label, float64(peak), "kib")
	}

	// The server must now hold the whole state: the generated events and
	// the join.
	stateStart := time.Now()
	var state []event
	if _, err := b.c.do(ctx, "GET", roomPath(fake.roomID)+"/state", u.Token, nil, &state); err != nil {
		t.fail(err)
	} else {
		r.figure("get_state_ms", "GET /state", ms(time.Since(stateStart)), "ms")
		if want := stateEvents + 1; len(state) != want {
			t.problem("GET /state lists %d events after the join, want %d (the room's %d and the join)", len(state), want, stateEvents)
		}
	}
	members, err := b.c.joinedMembers(ctx, u, fake.roomID)
	if err != nil {
		t.fail(err)
	} else if want := o.bigMembers + 1; len(members) != want {
		t.problem("joined_members lists %d members, want %d", len(members), want)
	}
	r.figure("members", "joined members", float64(len(members)), "")
	r.figure("fake_requests", "requests to the fake server", float64(fake.requests.Load()), "")
	return ctx.Err()
}

// lazyFilter uploads the filter a modern client syncs with: members
// lazy-loaded, a short timeline.
func (u *user) lazyFilter(ctx context.Context, c *client) (string, error) {
	return c.uploadFilter(ctx, u, map[string]any{
		"room": map[string]any{
			"timeline": map[string]any{"limit": 20},
			"state":    map[string]any{"lazy_load_members": true},
		},
	})
}
