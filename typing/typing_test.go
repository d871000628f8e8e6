package typing

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/veche/veche/internal/stream"
)

// clock is a fake clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFake(t *testing.T) (*Tracker, *stream.Stream, *clock) {
	t.Helper()
	c := &clock{t: time.UnixMilli(1_700_000_000_000)}
	st := stream.New(0)
	tr := New(st, c.now)
	t.Cleanup(tr.Close)
	return tr, st, c
}

func woken(sub *stream.Subscription) bool {
	select {
	case <-sub.C():
		return true
	default:
		return false
	}
}

const testRoom = "!r:x"

func TestPositionsMoveOnlyWhenTheListChanges(t *testing.T) {
	tr, st, _ := newFake(t)
	start := tr.Position()
	if tr.Changed(testRoom, start) {
		t.Fatal("an untouched room reports a change")
	}
	tr.Set(testRoom, "@alice:x", true, 10*time.Second, nil)
	p1 := tr.Position()
	if p1 != start+1 || !tr.Changed(testRoom, start) || tr.Changed(testRoom, p1) {
		t.Fatalf("after alice starts: position %d (start %d), changed since start %v, since p1 %v",
			p1, start, tr.Changed(testRoom, start), tr.Changed(testRoom, p1))
	}
	// Refreshing a typist's timeout is not a change clients need to see.
	tr.Set(testRoom, "@alice:x", true, 20*time.Second, nil)
	if tr.Position() != p1 {
		t.Fatal("refreshing alice's timeout moved the position")
	}
	tr.Set(testRoom, "@bob:x", true, 10*time.Second, nil)
	if got := tr.Users(testRoom); !slices.Equal(got, []string{"@alice:x", "@bob:x"}) {
		t.Fatalf("users = %v", got)
	}
	tr.Set(testRoom, "@alice:x", false, 0, nil)
	tr.Set(testRoom, "@carol:x", false, 0, nil) // not typing: no change
	if got := tr.Position(); got != p1+2 {
		t.Fatalf("position = %d, want %d", got, p1+2)
	}
	if got := tr.Users(testRoom); !slices.Equal(got, []string{"@bob:x"}) {
		t.Fatalf("users = %v", got)
	}
	if got := tr.Users("!other:x"); got == nil || len(got) != 0 {
		t.Fatalf("users of an unknown room = %#v, want empty and non-nil", got)
	}
	if tr.Changed("!other:x", start) {
		t.Fatal("a room nobody typed in reports a change")
	}
	// Typing never takes positions of the global stream.
	if st.Current() != 0 {
		t.Fatalf("global stream moved to %d", st.Current())
	}
}

func TestExpiryFollowsTheClock(t *testing.T) {
	tr, st, c := newFake(t)
	bob := st.Subscribe("@bob:x")
	defer bob.Close()
	tr.Set(testRoom, "@alice:x", true, 10*time.Second, []string{"@alice:x", "@bob:x"})
	if !woken(bob) {
		t.Fatal("bob not woken when alice started typing")
	}
	p := tr.Position()
	c.advance(9 * time.Second)
	if got := tr.Users(testRoom); len(got) != 1 || tr.Position() != p || woken(bob) {
		t.Fatalf("before the timeout: users %v, position %d (was %d)", got, tr.Position(), p)
	}
	c.advance(time.Second)
	if got := tr.Users(testRoom); len(got) != 0 {
		t.Fatalf("after the timeout: users %v", got)
	}
	if !tr.Changed(testRoom, p) || tr.Position() != p+1 {
		t.Fatalf("expiry did not move the position: %d, was %d", tr.Position(), p)
	}
	if !woken(bob) {
		t.Fatal("bob not woken when alice's typing expired")
	}
	// Typing again after expiry is a change again.
	tr.Set(testRoom, "@alice:x", true, time.Second, nil)
	if tr.Position() != p+2 {
		t.Fatalf("position = %d, want %d", tr.Position(), p+2)
	}
}

func TestTimeoutIsCapped(t *testing.T) {
	tr, _, c := newFake(t)
	tr.Set(testRoom, "@alice:x", true, time.Hour, nil)
	c.advance(MaxTimeout - time.Millisecond)
	if len(tr.Users(testRoom)) != 1 {
		t.Fatal("typing ended before the cap")
	}
	c.advance(time.Millisecond)
	if len(tr.Users(testRoom)) != 0 {
		t.Fatal("a one-hour timeout was not capped")
	}
	// Zero and negative timeouts mean "not typing".
	tr.Set(testRoom, "@alice:x", true, -time.Second, nil)
	tr.Set(testRoom, "@bob:x", true, 0, nil)
	if got := tr.Users(testRoom); len(got) != 0 {
		t.Fatalf("users = %v", got)
	}
}

func TestWakesOnlyTheGivenUsers(t *testing.T) {
	tr, st, _ := newFake(t)
	alice, bob := st.Subscribe("@alice:x"), st.Subscribe("@bob:x")
	defer alice.Close()
	defer bob.Close()
	tr.Set(testRoom, "@alice:x", true, time.Second, []string{"@alice:x"})
	if !woken(alice) || woken(bob) {
		t.Fatal("wake-ups did not follow the wake list")
	}
	// No change, no wake-up.
	tr.Set(testRoom, "@alice:x", true, time.Second, []string{"@alice:x"})
	if woken(alice) {
		t.Fatal("woken although the list did not change")
	}
}

func TestStaleTokensCountAsChanged(t *testing.T) {
	tr, _, _ := newFake(t)
	p := tr.Position()
	if !tr.Changed(testRoom, p+5) {
		t.Fatal("a token from the future (before a restart) does not count as changed")
	}
	if !tr.Changed(testRoom, 0) {
		t.Fatal("a token older than the tracker does not count as changed")
	}
	// Positions of a later tracker start above this one's.
	tr.Set(testRoom, "@alice:x", true, time.Second, nil)
	later := New(nil, func() time.Time { return time.UnixMilli(1_700_000_000_000 + 1000) })
	defer later.Close()
	if later.Position() <= tr.Position() {
		t.Fatalf("a tracker started a second later begins at %d, not above %d", later.Position(), tr.Position())
	}
}

func TestIdleRoomsAreForgotten(t *testing.T) {
	tr, _, _ := newFake(t)
	start := tr.Position()
	for i := range maxIdleRooms + 1 {
		r := fmt.Sprintf("!%d:x", i)
		tr.Set(r, "@alice:x", true, time.Second, nil)
		tr.Set(r, "@alice:x", false, 0, nil)
	}
	tr.mu.Lock()
	n := len(tr.rooms)
	tr.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d idle rooms kept", n)
	}
	// Tokens from before the pruning cannot be vouched for any more.
	if !tr.Changed("!0:x", start) || tr.Changed("!0:x", tr.Position()) {
		t.Fatal("Changed does not account for forgotten rooms")
	}
}

// TestTimerWakesLongPolls runs on the real clock: nobody asks the tracker
// anything, and the expiry must still wake the waiting reader.
func TestTimerWakesLongPolls(t *testing.T) {
	st := stream.New(0)
	tr := New(st, nil)
	defer tr.Close()
	bob := st.Subscribe("@bob:x")
	defer bob.Close()
	tr.Set(testRoom, "@alice:x", true, 20*time.Millisecond, []string{"@bob:x"})
	<-bob.C() // alice started typing
	p := tr.Position()
	select {
	case <-bob.C():
	case <-time.After(10 * time.Second):
		t.Fatal("expiry did not wake bob")
	}
	if got := tr.Users(testRoom); len(got) != 0 || !tr.Changed(testRoom, p) {
		t.Fatalf("after the timer: users %v, changed %v", got, tr.Changed(testRoom, p))
	}
}

func TestCloseStopsTimers(t *testing.T) {
	tr, _, _ := newFake(t)
	for i := range 10 {
		tr.Set(fmt.Sprintf("!%d:x", i), "@alice:x", true, time.Second, nil)
	}
	tr.Close()
	tr.mu.Lock()
	for id, r := range tr.rooms {
		if r.timer != nil {
			t.Errorf("room %s still has a timer", id)
		}
	}
	tr.mu.Unlock()
	// Still usable, without arming timers.
	tr.Set(testRoom, "@bob:x", true, time.Second, nil)
	tr.mu.Lock()
	armed := tr.rooms[testRoom].timer != nil
	tr.mu.Unlock()
	if armed {
		t.Fatal("Set after Close armed a timer")
	}
	tr.Close() // twice is fine
}

func TestConcurrentUse(t *testing.T) {
	st := stream.New(0)
	tr := New(st, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("@u%d:x", g)
			for i := range 200 {
				r := fmt.Sprintf("!%d:x", i%5)
				tr.Set(r, user, i%3 != 0, time.Duration(i%4)*time.Millisecond, []string{user})
				_ = tr.Users(r)
				_ = tr.Changed(r, tr.Position()-1)
			}
		}()
	}
	wg.Wait()
	tr.Close()
}

func TestListenersHearStartsRefreshesStopsAndExpiry(t *testing.T) {
	tr, _, c := newFake(t)
	var mu sync.Mutex
	var got []string
	tr.Listen(func(roomID, userID string, typing bool) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s %s %v", roomID, userID, typing))
		mu.Unlock()
	})
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
	tr.Set(testRoom, "@alice:x", true, 10*time.Second, nil)
	tr.Set(testRoom, "@alice:x", true, 10*time.Second, nil) // a refresh
	tr.Set(testRoom, "@bob:x", true, 5*time.Second, nil)
	tr.Set(testRoom, "@alice:x", false, 0, nil)
	tr.Set(testRoom, "@alice:x", false, 0, nil) // not typing: no change
	want := []string{"!r:x @alice:x true", "!r:x @alice:x true", "!r:x @bob:x true", "!r:x @alice:x false"}
	if g := take(); !slices.Equal(g, want) {
		t.Fatalf("heard %q, want %q", g, want)
	}
	// Expiry is heard by whichever call notices it first.
	c.advance(6 * time.Second)
	tr.Users(testRoom)
	if g := take(); !slices.Equal(g, []string{"!r:x @bob:x false"}) {
		t.Fatalf("after expiry heard %q", g)
	}
}
