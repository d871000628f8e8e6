package stream

import (
	"sync"
	"testing"
)

func TestPositionsBecomeVisibleInOrder(t *testing.T) {
	s := New(10)
	a := s.Reserve(1) // 11
	b := s.Reserve(2) // 12, 13
	if a != 11 || b != 12 {
		t.Fatalf("reserved %d, %d", a, b)
	}
	s.Release(b, 2, nil)
	if got := s.Current(); got != 10 {
		t.Fatalf("current = %d while 11 is still being written", got)
	}
	s.Release(a, 1, nil)
	if got := s.Current(); got != 13 {
		t.Fatalf("current = %d, want 13", got)
	}
	// A failed write leaves a gap that does not block.
	_ = s.Write(1, nil, func(int64) error { return errTest })
	if got := s.Current(); got != 14 {
		t.Fatalf("current after failed write = %d, want 14", got)
	}
}

var errTest = errorString("fail")

type errorString string

func (e errorString) Error() string { return string(e) }

func TestSubscriptionWakesOnlyItsUser(t *testing.T) {
	s := New(0)
	alice := s.Subscribe("@alice:x")
	defer alice.Close()
	bob := s.Subscribe("@bob:x")
	defer bob.Close()
	// Written before anyone waits: the buffered wake-up is kept.
	_ = s.Write(1, []string{"@alice:x"}, func(int64) error { return nil })
	select {
	case <-alice.C():
	default:
		t.Fatal("alice not woken")
	}
	select {
	case <-bob.C():
		t.Fatal("bob woken for alice's write")
	default:
	}
	s.WakeAll()
	<-bob.C()
}

func TestConcurrentWritersNeverExposeUncommitted(t *testing.T) {
	s := New(0)
	var mu sync.Mutex
	committed := map[int64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				_ = s.Write(1, nil, func(p int64) error {
					mu.Lock()
					committed[p] = true
					mu.Unlock()
					return nil
				})
				cur := s.Current()
				mu.Lock()
				for p := int64(1); p <= cur; p++ {
					if !committed[p] {
						mu.Unlock()
						t.Errorf("position %d visible before it was written", p)
						return
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if s.Current() != 1600 {
		t.Fatalf("current = %d", s.Current())
	}
}

func woken(sub *Subscription) bool {
	select {
	case <-sub.C():
		return true
	default:
		return false
	}
}

func TestSubscribeAllWakesWhenCurrentAdvances(t *testing.T) {
	s := New(0)
	all := s.SubscribeAll()
	defer all.Close()
	// A write for any user, or for none, wakes the whole-stream reader.
	_ = s.Write(1, []string{"@alice:x"}, func(int64) error { return nil })
	if !woken(all) {
		t.Fatal("not woken by a write")
	}
	_ = s.Write(1, nil, func(int64) error { return nil })
	if !woken(all) {
		t.Fatal("not woken by a write without users")
	}
	// A later write released before an earlier one is not readable yet:
	// no wake-up until the earlier one is released, failed or not.
	a := s.Reserve(1)
	b := s.Reserve(1)
	s.Release(b, 1, []string{"@bob:x"})
	if woken(all) {
		t.Fatal("woken before Current advanced")
	}
	s.Release(a, 1, nil)
	if !woken(all) || s.Current() != b {
		t.Fatalf("not woken when Current reached %d (current %d)", b, s.Current())
	}
	s.WakeAll()
	if !woken(all) {
		t.Fatal("not woken by WakeAll")
	}
	all.Close()
	_ = s.Write(1, nil, func(int64) error { return nil })
	if woken(all) {
		t.Fatal("woken after Close")
	}
}

func TestUserWakeWaitsForEarlierWrites(t *testing.T) {
	s := New(0)
	bob := s.Subscribe("@bob:x")
	defer bob.Close()
	a := s.Reserve(1)
	b := s.Reserve(1)
	// Bob's write is done but position a is still being written: waking
	// Bob now would have him read up to a Current below his write.
	s.Release(b, 1, []string{"@bob:x"})
	if woken(bob) {
		t.Fatal("bob woken while his write is not readable")
	}
	// The earlier write fails and wakes nobody itself; Bob's deferred
	// wake-up fires because Current now covers his write.
	s.Release(a, 1, nil)
	if !woken(bob) {
		t.Fatal("bob not woken once his write became readable")
	}
	if len(s.deferred) != 0 {
		t.Fatalf("deferred wake-ups left: %v", s.deferred)
	}
}
