package stateres

import (
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// authClosure returns the events reachable through auth_events from roots,
// and the roots themselves when withRoots is set. Events for which prune
// returns true are neither included nor walked past. Unloaded events are
// skipped.
func (r *resolver) authClosure(roots []string, withRoots bool, prune func(id string) bool) map[string]struct{} {
	seen := make(map[string]struct{})
	var stack []string
	if withRoots {
		stack = append(stack, roots...)
	} else {
		for _, id := range roots {
			stack = append(stack, r.auth[id]...)
		}
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[id]; ok {
			continue
		}
		if _, ok := r.events[id]; !ok {
			continue
		}
		if prune != nil && prune(id) {
			continue
		}
		seen[id] = struct{}{}
		stack = append(stack, r.auth[id]...)
	}
	return seen
}

// fullConflictedSet is the conflicted state set plus the auth difference, plus
// for v2.1 the conflicted state subgraph.
func (r *resolver) fullConflictedSet(sets []map[stateKey]gomatrixserverlib.PDU, unconflicted map[stateKey]gomatrixserverlib.PDU, conflicted map[string]gomatrixserverlib.PDU) map[string]gomatrixserverlib.PDU {
	full := make(map[string]gomatrixserverlib.PDU, len(conflicted))
	add := func(id string) {
		// Auth chains of well-formed events hold only state events; anything
		// else could never be put into a state map.
		if ev, ok := r.events[id]; ok && isState(ev) {
			full[id] = ev
		}
	}
	for id := range conflicted {
		add(id)
	}
	for id := range r.authDifference(sets, unconflicted, conflicted) {
		add(id)
	}
	if r.v21 {
		for id := range r.conflictedSubgraph(conflicted) {
			add(id)
		}
	}
	return full
}

// authDifference computes ∪Cᵢ − ∩Cᵢ, where Cᵢ, the full auth chain of state
// set Sᵢ, is taken to contain Sᵢ's own events as well as their auth chains.
// The spec's wording can be read either way; Synapse (both of its
// implementations) and Ruma count the set's events, and resolution is only
// useful if every server reaches the same answer. The readings differ for
// unconflicted events cited by the events of some sets only: counted, they
// are never in the difference.
//
// Cᵢ is not built in full. Every set holds the unconflicted events, so those
// and their auth chains (U) lie in every Cᵢ and never in the difference; and
// as U is closed under auth edges, an event outside U is only reachable from a
// set's conflicted events along paths that avoid U. Each set therefore needs
// only a walk from its conflicted events that stops at U, which keeps large
// rooms with a few conflicts cheap.
func (r *resolver) authDifference(sets []map[stateKey]gomatrixserverlib.PDU, unconflicted map[stateKey]gomatrixserverlib.PDU, conflicted map[string]gomatrixserverlib.PDU) map[string]struct{} {
	roots := make([]string, 0, len(unconflicted))
	for _, ev := range unconflicted {
		roots = append(roots, ev.EventID())
	}
	common := r.authClosure(roots, true, nil)
	inCommon := func(id string) bool {
		_, ok := common[id]
		return ok
	}

	count := make(map[string]int)
	for _, set := range sets {
		var setRoots []string
		for _, ev := range set {
			if _, ok := conflicted[ev.EventID()]; ok {
				setRoots = append(setRoots, ev.EventID())
			}
		}
		for id := range r.authClosure(setRoots, true, inCommon) {
			count[id]++
		}
	}
	diff := make(map[string]struct{})
	for id, n := range count {
		if n < len(sets) {
			diff[id] = struct{}{}
		}
	}
	return diff
}

// conflictedSubgraph returns the events lying on some auth_events path from
// one conflicted event to another, endpoints included: those reachable from a
// conflicted event that can themselves reach a conflicted event.
func (r *resolver) conflictedSubgraph(conflicted map[string]gomatrixserverlib.PDU) map[string]struct{} {
	const (
		unvisited = iota
		inProgress
		done
	)
	state := make(map[string]uint8)
	reaches := make(map[string]bool)

	roots := make([]string, 0, len(conflicted))
	for id := range conflicted {
		roots = append(roots, id)
	}
	slices.Sort(roots)

	type frame struct {
		id   string
		next int
	}
	var stack []frame
	for _, root := range roots {
		if state[root] != unvisited {
			continue
		}
		state[root] = inProgress
		stack = append(stack[:0], frame{id: root})
		for len(stack) > 0 {
			top := len(stack) - 1
			auth := r.auth[stack[top].id]
			if stack[top].next < len(auth) {
				a := auth[stack[top].next]
				stack[top].next++
				if _, ok := r.events[a]; !ok {
					continue
				}
				switch state[a] {
				case unvisited:
					state[a] = inProgress
					stack = append(stack, frame{id: a})
				case done:
					if reaches[a] {
						reaches[stack[top].id] = true
					}
				}
				// inProgress means a cycle, which only forged v1-format
				// event IDs can produce; the edge is ignored.
				continue
			}
			id := stack[top].id
			if _, ok := conflicted[id]; ok {
				reaches[id] = true
			}
			state[id] = done
			stack = stack[:top]
			if top > 0 && reaches[id] {
				reaches[stack[top-1].id] = true
			}
		}
	}

	sub := make(map[string]struct{})
	for id, ok := range reaches {
		if ok {
			sub[id] = struct{}{}
		}
	}
	return sub
}

// powerClosure selects the power events of the full conflicted set together
// with every event of their auth chains that is also in the full conflicted
// set (algorithm step 1).
func (r *resolver) powerClosure(full map[string]gomatrixserverlib.PDU) map[string]gomatrixserverlib.PDU {
	set := make(map[string]gomatrixserverlib.PDU)
	var roots []string
	for id, ev := range full {
		if isPowerEvent(ev) {
			set[id] = ev
			roots = append(roots, id)
		}
	}
	for id := range r.authClosure(roots, false, nil) {
		if ev, ok := full[id]; ok {
			set[id] = ev
		}
	}
	return set
}

// isPowerEvent follows the spec's definition: events that might take away
// someone's ability to act. Leaving or being banned by oneself does not count.
func isPowerEvent(ev gomatrixserverlib.PDU) bool {
	switch ev.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return ev.StateKeyEquals("")
	case spec.MRoomMember:
		if ev.StateKey() == nil || ev.StateKeyEquals(string(ev.SenderID())) {
			return false
		}
		membership, err := ev.Membership()
		if err != nil {
			return false
		}
		return membership == spec.Leave || membership == spec.Ban
	}
	return false
}
