// Package typing keeps track of who is typing in which room (spec: "Typing
// Notifications"). Typing is ephemeral: it lives in memory only and is
// never persisted, so it has its own position counter instead of taking
// positions of the global stream (those stand for persisted rows, and the
// stream restarts from the highest persisted one).
//
// Sync reads it like this: remember Position() in the sync token; on the
// next sync, for each room, Changed(room, since) says whether to send
// m.typing again, and Users(room) is the complete list to send (clients
// replace their list, spec). Long-polls are woken through the global
// stream's Wake when a room's typing list changes, including on expiry.
// Listeners (Listen) hear of each change, for the federation sender.
package typing

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veche/veche/internal/stream"
)

// MaxTimeout caps how long one request may mark a user as typing. The
// spec asks clients to repeat the request every 20–30 s while typing, so
// a longer timeout only leaves stale typing lists behind when a client
// disappears.
const MaxTimeout = 30 * time.Second

// maxIdleRooms bounds how many rooms without typists are remembered. They
// are kept so that Changed can report "the list became empty"; past the
// bound they are dropped and older tokens see every room as changed.
const maxIdleRooms = 1024

// Tracker is the typing state of every room. Create it with New and stop
// it with Close.
type Tracker struct {
	st  *stream.Stream
	now func() time.Time

	mu    sync.Mutex
	pos   int64
	floor int64 // tokens below this may have missed forgotten rooms
	rooms map[string]*room
	idle  int       // rooms with no typists
	next  time.Time // earliest expiry over all rooms; zero when none
	// closed stops timers from being armed or acting.
	closed bool

	// listeners hear of every change (Listen); changes are recorded under
	// mu in order and handed out under dispatch, so that each listener
	// sees one user's changes in the order they happened.
	listeners []func(roomID, userID string, typing bool)
	changes   []change
	// noted is set with changes, so that the common call without any
	// skips the dispatch locks.
	noted    atomic.Bool
	dispatch sync.Mutex
}

// change is one user starting (or still) typing in a room, or stopping.
type change struct {
	roomID, userID string
	typing         bool
}

type room struct {
	expires map[string]time.Time // typing user → when it stops
	pos     int64                // position of the last change of the list
	wake    []string             // who to wake when the list changes by expiry
	timer   *time.Timer
}

// New returns an empty tracker. now is the clock (nil: time.Now).
func New(st *stream.Stream, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	// Positions start at the clock in milliseconds rather than 0 so that a
	// token from before a restart is (almost always) older than every
	// position after it: that holds while the server averages fewer than
	// one typing change per millisecond.
	start := now().UnixMilli()
	return &Tracker{st: st, now: now, pos: start, floor: start, rooms: map[string]*room{}}
}

// Set marks userID as typing in roomID for timeout (capped at MaxTimeout),
// or as no longer typing. When the room's list of typists changes, the
// users in wake (the room's joined members) are woken, now and again when
// the list later changes by expiry.
func (t *Tracker) Set(roomID, userID string, typing bool, timeout time.Duration, wake []string) {
	timeout = min(max(timeout, 0), MaxTimeout)
	t.mu.Lock()
	now := t.now()
	wakes := t.sweep(now)
	r := t.rooms[roomID]
	changed := false
	if typing && timeout > 0 {
		if r == nil {
			r = &room{expires: map[string]time.Time{}}
			t.rooms[roomID] = r
		} else if len(r.expires) == 0 {
			t.idle--
		}
		_, was := r.expires[userID]
		exp := now.Add(timeout)
		r.expires[userID] = exp
		// A next that is too early (its typist stopped since) only
		// costs a sweep that finds nothing, so it is only ever lowered
		// here.
		if t.next.IsZero() || exp.Before(t.next) {
			t.next = exp
		}
		changed = !was
		r.wake = slices.Clone(wake)
		t.note(roomID, userID, true)
	} else if r != nil {
		if _, was := r.expires[userID]; was {
			delete(r.expires, userID)
			changed = true
			t.note(roomID, userID, false)
			r.wake = slices.Clone(wake)
			if len(r.expires) == 0 {
				t.idle++
			}
		}
	}
	if changed {
		t.pos++
		r.pos = t.pos
		wakes = append(wakes, wake...)
	}
	if r != nil {
		t.arm(r, now)
	}
	t.prune()
	t.mu.Unlock()
	t.wake(wakes)
}

// Position is the current typing position, to store in sync tokens.
func (t *Tracker) Position() int64 {
	t.mu.Lock()
	wakes := t.sweep(t.now())
	pos := t.pos
	t.mu.Unlock()
	t.wake(wakes)
	return pos
}

// Changed reports whether the room's typing list changed after position
// since. A since the tracker cannot vouch for (from before a restart, or
// older than forgotten idle rooms) counts as changed: resending a typing
// list is harmless, missing one is not.
func (t *Tracker) Changed(roomID string, since int64) bool {
	t.mu.Lock()
	wakes := t.sweep(t.now())
	changed := false
	switch r := t.rooms[roomID]; {
	case since > t.pos || since < t.floor:
		changed = true
	case r != nil:
		changed = r.pos > since
	}
	t.mu.Unlock()
	t.wake(wakes)
	return changed
}

// Users returns who is typing in the room now, sorted; never nil, since
// sync sends the list as is.
func (t *Tracker) Users(roomID string) []string {
	t.mu.Lock()
	wakes := t.sweep(t.now())
	users := []string{}
	if r := t.rooms[roomID]; r != nil {
		for u := range r.expires {
			users = append(users, u)
		}
	}
	t.mu.Unlock()
	t.wake(wakes)
	slices.Sort(users)
	return users
}

// Close stops the expiry timers. The tracker still answers afterwards,
// expiring typists when asked, but wakes nobody on its own.
func (t *Tracker) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, r := range t.rooms {
		if r.timer != nil {
			r.timer.Stop()
			r.timer = nil
		}
	}
}

// sweep drops the typists whose time ran out and returns who to wake for
// the rooms that changed. Every entry point sweeps first, so answers
// follow the clock even when no timer fired (tests with a fake clock, or
// a timer that is running late).
func (t *Tracker) sweep(now time.Time) []string {
	if t.next.IsZero() || now.Before(t.next) {
		return nil
	}
	var wakes []string
	for id, r := range t.rooms {
		changed := false
		for u, exp := range r.expires {
			if !now.Before(exp) {
				delete(r.expires, u)
				changed = true
				t.note(id, u, false)
			}
		}
		if changed {
			t.pos++
			r.pos = t.pos
			wakes = append(wakes, r.wake...)
			if len(r.expires) == 0 {
				t.idle++
			}
			t.arm(r, now)
		}
	}
	t.recomputeNext()
	t.prune()
	return wakes
}

// recomputeNext finds the earliest expiry over all rooms.
func (t *Tracker) recomputeNext() {
	t.next = time.Time{}
	for _, r := range t.rooms {
		if e := earliest(r); !e.IsZero() && (t.next.IsZero() || e.Before(t.next)) {
			t.next = e
		}
	}
}

func earliest(r *room) time.Time {
	var e time.Time
	for _, exp := range r.expires {
		if e.IsZero() || exp.Before(e) {
			e = exp
		}
	}
	return e
}

// arm sets the room's timer to its earliest expiry, so that long-polls
// learn of the expiry without anyone asking.
func (t *Tracker) arm(r *room, now time.Time) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	e := earliest(r)
	if t.closed || e.IsZero() {
		return
	}
	// A clock that does not move (tests) would otherwise re-arm a timer
	// of zero length over and over.
	d := max(e.Sub(now), time.Millisecond)
	r.timer = time.AfterFunc(d, func() { t.expire(r) })
}

// expire runs when room r's timer fires.
func (t *Tracker) expire(r *room) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	now := t.now()
	wakes := t.sweep(now)
	// When the clock is behind the timer nothing expired: try again
	// rather than leave the room's typists without a timer.
	if len(r.expires) > 0 {
		t.arm(r, now)
	}
	t.mu.Unlock()
	t.wake(wakes)
}

// prune forgets rooms without typists once there are too many of them.
func (t *Tracker) prune() {
	if t.idle <= maxIdleRooms {
		return
	}
	for id, r := range t.rooms {
		if len(r.expires) == 0 {
			delete(t.rooms, id)
		}
	}
	t.idle = 0
	// A token older than now may have missed one of the forgotten
	// changes.
	t.floor = t.pos
}

// wake wakes the users' long-polls and tells the listeners of the
// changes recorded so far. Callers hold no lock.
func (t *Tracker) wake(users []string) {
	if len(users) > 0 && t.st != nil {
		t.st.Wake(users)
	}
	if !t.noted.Load() {
		return
	}
	t.dispatch.Lock()
	defer t.dispatch.Unlock()
	t.mu.Lock()
	changes, listeners := t.changes, t.listeners
	t.changes = nil
	t.noted.Store(false)
	t.mu.Unlock()
	for _, c := range changes {
		for _, fn := range listeners {
			fn(c.roomID, c.userID, c.typing)
		}
	}
}

// Listen adds fn to the functions told of every change: a user starting
// to type, typing again before the timeout ran out (so that a listener
// can refresh the timeout elsewhere, such as on other servers), and
// stopping by request or by expiry. Expiry is noticed by the timers or by
// the next call that looks, whichever comes first. fn is called without
// locks held but must not block: it runs on the caller's request path.
// Every user's changes are reported, local or not; the listener filters.
func (t *Tracker) Listen(fn func(roomID, userID string, typing bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.listeners = append(t.listeners, fn)
}

// note records a change for the listeners; t.mu is held.
func (t *Tracker) note(roomID, userID string, typing bool) {
	if len(t.listeners) > 0 {
		t.changes = append(t.changes, change{roomID: roomID, userID: userID, typing: typing})
		t.noted.Store(true)
	}
}
