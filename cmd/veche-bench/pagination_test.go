package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const testMarker = "veche-bench r messages "

func msg(id string) event {
	e := event{EventID: id, Type: "m.room.message"}
	e.Content.Body = testMarker + id
	return e
}

func state(id, typ string) event {
	empty := ""
	return event{EventID: id, Type: typ, StateKey: &empty}
}

// room returns what a backwards walk over a room would see: newest first,
// ending with the creation event.
func room(forward ...event) []event {
	all := append([]event{state("$create", "m.room.create"), state("$join", "m.room.member")}, forward...)
	slices.Reverse(all)
	return all
}

// at makes a sent message that was requested at ms and answered at ms+1.
func at(id string, startMS int) sentEvent {
	t0 := time.Unix(0, 0)
	return sentEvent{id: id, start: t0.Add(time.Duration(startMS) * time.Millisecond), end: t0.Add(time.Duration(startMS+1) * time.Millisecond)}
}

func TestCheckPaginationAcceptsACompleteWalk(t *testing.T) {
	sent := []sentEvent{at("$a", 0), at("$b", 10), at("$c", 20)}
	if p := checkPagination(sent, room(msg("$a"), msg("$b"), msg("$c")), testMarker); len(p) != 0 {
		t.Errorf("problems: %v", p)
	}
	// Concurrent sends (overlapping requests) may land in either order.
	overlapping := []sentEvent{
		{id: "$a", start: time.Unix(0, 0), end: time.Unix(2, 0)},
		{id: "$b", start: time.Unix(1, 0), end: time.Unix(3, 0)},
	}
	if p := checkPagination(overlapping, room(msg("$b"), msg("$a")), testMarker); len(p) != 0 {
		t.Errorf("overlapping sends: %v", p)
	}
	// Other messages without this run's marker are none of its business.
	foreign := msg("$x")
	foreign.Content.Body = "hello"
	if p := checkPagination(sent, room(msg("$a"), foreign, msg("$b"), msg("$c")), testMarker); len(p) != 0 {
		t.Errorf("foreign message: %v", p)
	}
}

func TestCheckPaginationFindsFaults(t *testing.T) {
	sent := []sentEvent{at("$a", 0), at("$b", 10), at("$c", 20)}
	tests := []struct {
		name string
		seen []event
		want string
	}{
		{"missing", room(msg("$a"), msg("$c")), "1 sent messages missing from pagination, e.g. $b"},
		{"repeated", room(msg("$a"), msg("$b"), msg("$b"), msg("$c")), "1 events returned more than once, e.g. $b"},
		// A page boundary repeating a state event is as wrong as a message.
		{"repeated state", append(room(msg("$a"), msg("$b"), msg("$c")), state("$join", "m.room.member")), "1 events returned more than once, e.g. $join"},
		{"unacknowledged", room(msg("$a"), msg("$b"), msg("$z"), msg("$c")), "1 messages returned that no send acknowledged, e.g. $z"},
		{"stopped early", room(msg("$a"), msg("$b"), msg("$c"))[:3], "pagination ended before the room's m.room.create event"},
		{"nothing", nil, "pagination ended before the room's m.room.create event"},
		{"out of order", room(msg("$b"), msg("$a"), msg("$c")), "messages out of causal order"},
		{"reversed", room(msg("$c"), msg("$b"), msg("$a")), "2 messages out of causal order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := checkPagination(sent, tt.seen, testMarker)
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tt.want) }) {
				t.Errorf("problems %q do not mention %q", p, tt.want)
			}
		})
	}
}
