package main

import (
	"slices"
	"time"
)

// Summary describes one latency distribution. Times are milliseconds so
// that the JSON output is readable without unit conversions.
type Summary struct {
	Count int `json:"count"`
	// PerSecond is Count over the wall time of the phase the samples came
	// from; zero when a rate means nothing (repeated single requests).
	PerSecond float64 `json:"per_second,omitempty"`
	MeanMS    float64 `json:"mean_ms"`
	P50MS     float64 `json:"p50_ms"`
	P90MS     float64 `json:"p90_ms"`
	P95MS     float64 `json:"p95_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
}

// summarize computes the distribution of all samples; wall, when positive,
// gives the rate.
func summarize(samples []time.Duration, wall time.Duration) Summary {
	s := Summary{Count: len(samples)}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var total time.Duration
	for _, d := range sorted {
		total += d
	}
	s.MeanMS = ms(total / time.Duration(len(sorted)))
	s.P50MS = ms(percentile(sorted, 50))
	s.P90MS = ms(percentile(sorted, 90))
	s.P95MS = ms(percentile(sorted, 95))
	s.P99MS = ms(percentile(sorted, 99))
	s.MaxMS = ms(sorted[len(sorted)-1])
	if wall > 0 {
		s.PerSecond = float64(len(samples)) / wall.Seconds()
	}
	return s
}

// percentile is the nearest-rank percentile of sorted samples: the
// smallest sample with at least p% of all samples at or below it. Unlike
// interpolation it always answers a latency that was actually observed.
// The rank is computed in integers because p/100*n in floating point
// lands just above whole numbers (0.95*20 = 19.000000000000004), which
// would pick the next sample.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	hundredths := int64(p*100 + 0.5)
	rank := int((hundredths*int64(n) + 9999) / 10000)
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
