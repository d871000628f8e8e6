package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	upTo20 := make([]int, 20)
	for i := range upTo20 {
		upTo20[i] = i + 1
	}
	upTo100 := make([]int, 100)
	for i := range upTo100 {
		upTo100[i] = i + 1
	}
	tests := []struct {
		name    string
		samples []int
		p       float64
		want    int
	}{
		{"empty", nil, 50, 0},
		{"single p50", []int{7}, 50, 7},
		{"single p99", []int{7}, 99, 7},
		{"p0 is the minimum", []int{1, 2, 3}, 0, 1},
		{"p100 is the maximum", []int{1, 2, 3}, 100, 3},
		{"median of odd count", []int{1, 2, 3, 4, 5}, 50, 3},
		// Nearest rank takes the lower middle, never an average.
		{"median of even count", []int{1, 2, 3, 4}, 50, 2},
		// 0.95*20 is 19.000000000000004 in floating point; the rank is 19.
		{"p95 of 20 is the 19th", upTo20, 95, 19},
		{"p90 of 20 is the 18th", upTo20, 90, 18},
		{"p99 of 20 is the last", upTo20, 99, 20},
		{"p99 of 100", upTo100, 99, 99},
		{"p50 of 100", upTo100, 50, 50},
		{"p99.9 of 100 rounds up", upTo100, 99.9, 100},
		{"p1 of 100", upTo100, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := percentile(durations(tt.samples...), tt.p)
			if want := time.Duration(tt.want) * time.Millisecond; got != want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.samples, tt.p, got, want)
			}
		})
	}
}

func TestSummarizeSortsACopy(t *testing.T) {
	in := durations(5, 1, 4, 2, 3, 10, 9, 8, 7, 6)
	s := summarize(in, 2*time.Second)
	want := Summary{Count: 10, PerSecond: 5, MeanMS: 5.5, P50MS: 5, P90MS: 9, P95MS: 10, P99MS: 10, MaxMS: 10}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if in[0] != 5*time.Millisecond {
		t.Error("summarize reordered the caller's samples")
	}
}

func TestSummarizeEmptyAndNoRate(t *testing.T) {
	if s := summarize(nil, time.Second); s != (Summary{}) {
		t.Errorf("summarize(nil) = %+v, want zero", s)
	}
	if s := summarize(durations(3), 0); s.PerSecond != 0 || s.MaxMS != 3 || s.P50MS != 3 {
		t.Errorf("summarize without wall = %+v", s)
	}
}

// Percentiles are ordered and bounded by the extremes whatever the data.
func TestSummarizeMonotonic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 1; n < 300; n += 7 {
		in := make([]time.Duration, n)
		for i := range in {
			in[i] = time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		}
		s := summarize(in, 0)
		if s.P50MS > s.P90MS || s.P90MS > s.P95MS || s.P95MS > s.P99MS || s.P99MS > s.MaxMS {
			t.Fatalf("n=%d: percentiles out of order: %+v", n, s)
		}
	}
}
