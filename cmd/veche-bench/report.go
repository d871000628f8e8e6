package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
)

// Report is the whole run; with --json it is printed as is.
type Report struct {
	Command     string        `json:"command"`
	URL         string        `json:"url"`
	URL2        string        `json:"url2,omitempty"`
	RunID       string        `json:"run_id"`
	Versions    []string      `json:"server_versions"`
	Settings    settings      `json:"settings"`
	Setup       setupFigures  `json:"setup"`
	Scenarios   []*Result     `json:"scenarios"`
	Server      *serverTotals `json:"server,omitempty"`
	OK          bool          `json:"ok"`
	WallSeconds float64       `json:"wall_seconds"`
}

type settings struct {
	Users        int    `json:"users"`
	Rooms        int    `json:"rooms"`
	Senders      int    `json:"senders"`
	Messages     int    `json:"messages"`
	History      int    `json:"history"`
	InitialSyncs int    `json:"initial_syncs"`
	Registration string `json:"registration"`
	// big-join's room, when it ran.
	BigMembers     int    `json:"big_members,omitempty"`
	BigState       int    `json:"big_state,omitempty"`
	BigRoomVersion string `json:"big_room_version,omitempty"`
}

type setupFigures struct {
	Users   int     `json:"users_registered"`
	Seconds float64 `json:"seconds"`
}

// serverTotals is the server process over the whole run. VmHWM is the
// peak since the server started, so the before value shows whether the
// run raised it.
type serverTotals struct {
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	HWMBeforeKiB int64   `json:"hwm_before_kib"`
	HWMAfterKiB  int64   `json:"hwm_after_kib"`
	CPUSeconds   float64 `json:"cpu_seconds"`
}

type serverUsage struct {
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	HWMKiB       int64   `json:"hwm_kib"`
	CPUSeconds   float64 `json:"cpu_seconds"`
}

// Result is one scenario's figures.
type Result struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	OK          bool      `json:"ok"`
	WallSeconds float64   `json:"wall_seconds"`
	Latencies   []Latency `json:"latencies"`
	Figures     figures   `json:"figures"`
	// RateLimited counts 429 answers waited out; waits are in the wall
	// time and rates but not in the latencies.
	RateLimited int64        `json:"rate_limited"`
	Errors      int          `json:"errors"`
	Problems    []string     `json:"problems,omitempty"`
	Server      *serverUsage `json:"server,omitempty"`
	// Server2 is the second server (--pid2) in the federation scenario.
	Server2 *serverUsage `json:"server2,omitempty"`
}

// Latency is a named distribution, e.g. "send".
type Latency struct {
	Name string `json:"name"`
	Summary
}

func (r *Result) latency(name string, s Summary) {
	r.Latencies = append(r.Latencies, Latency{Name: name, Summary: s})
}

// figure adds a scalar result; unit drives its formatting in the table.
func (r *Result) figure(key, label string, value float64, unit string) {
	r.Figures = append(r.Figures, figure{Key: key, Label: label, Value: value, Unit: unit})
}

type figure struct {
	Key, Label string
	Value      float64
	Unit       string
}

// figures keeps the order the scenario gave them for the table; in JSON
// they are an object keyed by name, which is easier to query.
type figures []figure

func (fs figures) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(f.Key)
		buf.Write(k)
		buf.WriteByte(':')
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, err
		}
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func (fs *figures) UnmarshalJSON(data []byte) error {
	var m map[string]float64
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	*fs = nil
	for k, v := range m {
		*fs = append(*fs, figure{Key: k, Label: k, Value: v})
	}
	return nil
}

// Get returns a figure by key (tests, and readers of the JSON).
func (fs figures) Get(key string) (float64, bool) {
	for _, f := range fs {
		if f.Key == key {
			return f.Value, true
		}
	}
	return 0, false
}

func writeJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func writeText(w io.Writer, rep *Report) {
	fmt.Fprintln(w, rep.Command)
	versions := ""
	if n := len(rep.Versions); n > 0 {
		versions = fmt.Sprintf(" (client API %s … %s)", rep.Versions[0], rep.Versions[n-1])
	}
	fmt.Fprintf(w, "server   %s%s\n", rep.URL, versions)
	if rep.URL2 != "" {
		fmt.Fprintf(w, "server 2 %s\n", rep.URL2)
	}
	s := rep.Settings
	fmt.Fprintf(w, "run      %s: %d users, %d senders, %d messages per scenario, %d rooms × %d messages for initial-sync\n",
		rep.RunID, s.Users, s.Senders, s.Messages, s.Rooms, s.History)
	if s.BigMembers > 0 {
		fmt.Fprintf(w, "big-join room version %s, %d members, %d state events\n", s.BigRoomVersion, s.BigMembers, s.BigState)
	}
	fmt.Fprintf(w, "setup    %d users registered in %.2f s (%s)\n", rep.Setup.Users, rep.Setup.Seconds, s.Registration)

	for _, r := range rep.Scenarios {
		fmt.Fprintf(w, "\n%s — %s\n", r.Name, r.Description)
		fmt.Fprintf(w, "  %-14s %7s %11s %9s %9s %9s %9s %9s\n", "measure", "count", "rate", "p50", "p90", "p95", "p99", "max")
		for _, l := range r.Latencies {
			rate := "-"
			if l.PerSecond > 0 {
				rate = fmt.Sprintf("%.1f/s", l.PerSecond)
			}
			fmt.Fprintf(w, "  %-14s %7d %11s %9s %9s %9s %9s %9s\n", l.Name, l.Count, rate,
				fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P95MS), fmtMS(l.P99MS), fmtMS(l.MaxMS))
		}
		var parts []string
		for _, f := range r.Figures {
			parts = append(parts, f.Label+" "+formatFigure(f))
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "  %s\n", strings.Join(parts, " · "))
		}
		line := fmt.Sprintf("  wall %.2f s · 429s %d · errors %d", r.WallSeconds, r.RateLimited, r.Errors)
		if u := r.Server; u != nil {
			line += fmt.Sprintf(" · server RSS %s → %s, peak %s, CPU %.2f s",
				fmtKiB(u.RSSBeforeKiB), fmtKiB(u.RSSAfterKiB), fmtKiB(u.HWMKiB), u.CPUSeconds)
		}
		if u := r.Server2; u != nil {
			line += fmt.Sprintf(" · server 2 RSS %s → %s, peak %s, CPU %.2f s",
				fmtKiB(u.RSSBeforeKiB), fmtKiB(u.RSSAfterKiB), fmtKiB(u.HWMKiB), u.CPUSeconds)
		}
		fmt.Fprintln(w, line)
		if r.OK {
			fmt.Fprintln(w, "  ok")
		} else {
			fmt.Fprintln(w, "  FAILED:")
			for _, p := range r.Problems {
				fmt.Fprintf(w, "    ! %s\n", p)
			}
		}
	}

	failed := 0
	for _, r := range rep.Scenarios {
		if !r.OK {
			failed++
		}
	}
	verdict := fmt.Sprintf("all %d scenarios passed", len(rep.Scenarios))
	if failed > 0 {
		verdict = fmt.Sprintf("%d of %d scenarios FAILED", failed, len(rep.Scenarios))
	}
	fmt.Fprintf(w, "\nsummary  %s in %.1f s\n", verdict, rep.WallSeconds)
	if t := rep.Server; t != nil {
		fmt.Fprintf(w, "server   RSS %s → %s · peak (VmHWM) %s → %s · CPU %.2f s\n",
			fmtKiB(t.RSSBeforeKiB), fmtKiB(t.RSSAfterKiB), fmtKiB(t.HWMBeforeKiB), fmtKiB(t.HWMAfterKiB), t.CPUSeconds)
	}
}

// fmtMS keeps three significant digits or so: sub-millisecond loopback
// latencies and multi-second initial syncs share one table.
func fmtMS(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2fms", v)
	case v < 1000:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fs", v/1000)
	}
}

func fmtKiB(k int64) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }

func formatFigure(f figure) string {
	switch f.Unit {
	case "bytes":
		return fmt.Sprintf("%.1f KiB", f.Value/1024)
	case "s":
		return fmt.Sprintf("%.2f s", f.Value)
	case "ms":
		return fmtMS(f.Value)
	case "/s":
		return fmt.Sprintf("%.1f/s", f.Value)
	case "kib":
		return fmtKiB(int64(f.Value))
	}
	if f.Value == math.Trunc(f.Value) {
		return fmt.Sprintf("%.0f", f.Value)
	}
	return fmt.Sprintf("%.2f", f.Value)
}
