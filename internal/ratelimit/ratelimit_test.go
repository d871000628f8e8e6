package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	l := New(2, 3, clock) // 2 tokens/s, burst 3

	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d within burst refused", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok {
		t.Fatal("request beyond burst allowed")
	}
	if wait != 500*time.Millisecond {
		t.Fatalf("wait = %v, want 500ms", wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("other key limited by a's usage")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refilled token not granted")
	}
	if ok, _ := l.Peek("a"); ok {
		t.Fatal("peek reports a token that is not there")
	}
	now = now.Add(time.Hour)
	if ok, _ := l.Allow("c"); !ok { // triggers a sweep
		t.Fatal("fresh key refused")
	}
	if _, exists := l.buckets["a"]; exists {
		t.Fatal("full bucket was not swept")
	}
	var nilLimiter *Limiter
	if ok, _ := nilLimiter.Allow("x"); !ok {
		t.Fatal("nil limiter must allow")
	}
}
