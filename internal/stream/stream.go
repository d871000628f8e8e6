// Package stream hands out positions in Veche's one global stream and
// wakes the readers waiting for them.
//
// Every change a client syncs (room events, account data, receipts, …)
// gets a position. Writers reserve positions before they commit and
// release them after; readers only ever see positions up to the highest
// one below which every reserved position has been released, so a reader
// never skips a change that was still committing (the classic "stream
// position visible before its row" bug). Positions of failed writes
// become harmless gaps.
package stream

import "sync"

// Stream is the position allocator plus the notifier. One process owns
// the stream: positions are allocated in memory from the highest
// persisted one, without a database round trip.
type Stream struct {
	mu       sync.Mutex
	next     int64          // next position to hand out
	inflight map[int64]bool // reserved and not yet released
	current  int64          // all positions <= current are released

	// waiters are the long-polling readers by user ID.
	waiters map[string]map[*waiter]struct{}
	// all are the readers of every write (SubscribeAll).
	all map[*waiter]struct{}
	// deferred holds the users of writes released while an earlier
	// position was still in flight, by the write's last position: waking
	// them at once would let them read up to a Current() below their
	// write, find nothing and wait again, so they are woken when Current
	// reaches it.
	deferred map[int64][]string
}

type waiter struct {
	ch chan struct{}
}

// New starts a stream after the highest position already persisted.
func New(persisted int64) *Stream {
	return &Stream{next: persisted + 1, current: persisted, inflight: map[int64]bool{},
		waiters: map[string]map[*waiter]struct{}{}, all: map[*waiter]struct{}{}, deferred: map[int64][]string{}}
}

// Reserve takes n consecutive positions and returns the first. Every
// reserved position must be released with Release, success or not.
func (s *Stream) Reserve(n int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.next
	for p := first; p < first+int64(n); p++ {
		s.inflight[p] = true
	}
	s.next += int64(n)
	return first
}

// Release ends the reservation of [first, first+n) and wakes the users
// the writes concern (none when the write failed). Readers then see the
// new positions as soon as every earlier reservation is released too;
// the users are woken only then, and so are the SubscribeAll readers
// whenever Current advances.
func (s *Stream) Release(first int64, n int, users []string) {
	s.mu.Lock()
	for p := first; p < first+int64(n); p++ {
		delete(s.inflight, p)
	}
	before := s.current
	for s.current+1 < s.next && !s.inflight[s.current+1] {
		s.current++
	}
	if last := first + int64(n) - 1; last > s.current && len(users) > 0 {
		s.deferred[last] = append(s.deferred[last], users...)
		users = nil
	}
	var all []*waiter
	if s.current > before {
		for p, us := range s.deferred {
			if p <= s.current {
				users = append(users, us...)
				delete(s.deferred, p)
			}
		}
		for w := range s.all {
			all = append(all, w)
		}
	}
	s.mu.Unlock()
	notify(all)
	s.Wake(users)
}

// Current is the highest position readers may read up to.
func (s *Stream) Current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// AtLeast makes sure future positions are above pos. A client can hold a
// token from before a restart that is ahead of the highest persisted
// position (the last writes before the restart failed and left gaps);
// without this its next sync would skip events that reuse those numbers.
func (s *Stream) AtLeast(pos int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos < s.next {
		return
	}
	s.next = pos + 1
	if len(s.inflight) == 0 {
		s.current = pos
	}
}

// Write reserves n positions, runs fn with the first, and releases them,
// waking users when fn succeeds.
func (s *Stream) Write(n int, users []string, fn func(first int64) error) error {
	first := s.Reserve(n)
	err := fn(first)
	if err != nil {
		users = nil
	}
	s.Release(first, n, users)
	return err
}

// Subscription receives wake-ups for one user, or for every write
// (SubscribeAll). Subscribe before looking for changes, then wait on C: a
// write that lands between the look and the wait still wakes the reader.
type Subscription struct {
	s    *Stream
	user string
	all  bool
	w    *waiter
}

// Subscribe starts receiving wake-ups for user. Close it when done.
func (s *Stream) Subscribe(user string) *Subscription {
	w := &waiter{ch: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.waiters[user] == nil {
		s.waiters[user] = map[*waiter]struct{}{}
	}
	s.waiters[user][w] = struct{}{}
	s.mu.Unlock()
	return &Subscription{s: s, user: user, w: w}
}

// SubscribeAll starts receiving a wake-up whenever Current advances
// (whoever the writes concern) and on WakeAll: for consumers of the whole
// stream such as the federation sender. Close it when done.
func (s *Stream) SubscribeAll() *Subscription {
	w := &waiter{ch: make(chan struct{}, 1)}
	s.mu.Lock()
	s.all[w] = struct{}{}
	s.mu.Unlock()
	return &Subscription{s: s, all: true, w: w}
}

// C fires when something was written for the user. A wake-up only means
// "look again": the reader filters what concerns it.
func (sub *Subscription) C() <-chan struct{} { return sub.w.ch }

// Close stops the wake-ups.
func (sub *Subscription) Close() {
	s := sub.s
	s.mu.Lock()
	if sub.all {
		delete(s.all, sub.w)
	} else {
		delete(s.waiters[sub.user], sub.w)
		if len(s.waiters[sub.user]) == 0 {
			delete(s.waiters, sub.user)
		}
	}
	s.mu.Unlock()
}

// WakeAll wakes every waiting reader (used when a change concerns users
// the writer cannot list, such as a room's membership changing).
func (s *Stream) WakeAll() {
	s.mu.Lock()
	var wake []*waiter
	for _, ws := range s.waiters {
		for w := range ws {
			wake = append(wake, w)
		}
	}
	for w := range s.all {
		wake = append(wake, w)
	}
	s.mu.Unlock()
	notify(wake)
}

// Wake wakes the given users' readers without taking a position: for
// in-memory changes (typing) that have their own counter, since a
// position of this stream must stand for something persisted.
func (s *Stream) Wake(users []string) {
	if len(users) == 0 {
		return
	}
	s.mu.Lock()
	var wake []*waiter
	for _, u := range users {
		for w := range s.waiters[u] {
			wake = append(wake, w)
		}
	}
	s.mu.Unlock()
	notify(wake)
}

// notify wakes waiters without blocking: a pending wake-up already says
// "look again".
func notify(ws []*waiter) {
	for _, w := range ws {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}
