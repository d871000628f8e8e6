package stateres

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// resolver holds what one v2/v2.1 resolution needs: the auth DAG reachable
// from the state sets and caches of per-event facts that the orderings look
// up repeatedly.
type resolver struct {
	ctx     context.Context
	version gomatrixserverlib.IRoomVersion
	loader  EventLoader
	roomID  string
	v21     bool

	// events holds every event of the state sets and of their auth chains
	// that could be loaded; auth holds each one's deduplicated auth event IDs.
	events map[string]gomatrixserverlib.PDU
	auth   map[string][]string

	rejected map[string]bool
	plCache  map[string]*gomatrixserverlib.PowerLevelContent
}

func (r *resolver) resolve(sets []map[stateKey]gomatrixserverlib.PDU, unconflicted map[stateKey]gomatrixserverlib.PDU, conflicted map[string]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	if err := r.loadAuthDAG(sets); err != nil {
		return nil, err
	}
	if !r.hasCreateEvent() {
		return nil, ErrMissingCreateEvent
	}

	full := r.fullConflictedSet(sets, unconflicted, conflicted)

	// Steps 1 and 2: power events and the parts of their auth chains that are
	// in the full conflicted set, in reverse topological power order, auth
	// checked on top of the unconflicted state (v2) or of nothing (v2.1).
	powerSet := r.powerClosure(full)
	powerOrder := r.reverseTopologicalPowerOrder(powerSet)

	partial := make(map[stateKey]gomatrixserverlib.PDU, len(unconflicted)+len(full))
	if !r.v21 {
		for k, ev := range unconflicted {
			partial[k] = ev
		}
	}
	r.iterativeAuthChecks(partial, powerOrder)
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}

	// Steps 3 and 4: everything else, in mainline order against the power
	// levels that survived step 2.
	rest := make([]gomatrixserverlib.PDU, 0, len(full)-len(powerSet))
	for id, ev := range full {
		if _, ok := powerSet[id]; !ok {
			rest = append(rest, ev)
		}
	}
	r.mainlineSort(rest, partial[powerLevelsKey])
	r.iterativeAuthChecks(partial, rest)

	// Step 5: the unconflicted state map always wins.
	for k, ev := range unconflicted {
		partial[k] = ev
	}
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	return sortedState(partial), nil
}

// loadAuthDAG walks auth_events from every state event, one loader call per
// generation so a database-backed loader sees a few large batches rather than
// one query per event.
func (r *resolver) loadAuthDAG(sets []map[stateKey]gomatrixserverlib.PDU) error {
	size := 0
	for _, set := range sets {
		size = max(size, len(set))
	}
	size += size / 4 // room for superseded auth events
	r.events = make(map[string]gomatrixserverlib.PDU, size)
	r.auth = make(map[string][]string, size)
	for _, set := range sets {
		for _, ev := range set {
			r.addEvent(ev)
		}
	}
	requested := make(map[string]struct{})
	var frontier []string
	enqueue := func(id string) {
		for _, a := range r.auth[id] {
			if _, ok := r.events[a]; ok {
				continue
			}
			if _, ok := requested[a]; ok {
				continue
			}
			requested[a] = struct{}{}
			frontier = append(frontier, a)
		}
	}
	for id := range r.events {
		enqueue(id)
	}
	for len(frontier) > 0 {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		batch := frontier
		frontier = nil
		slices.Sort(batch)
		got, err := r.loader.Events(r.ctx, batch)
		if err != nil {
			return fmt.Errorf("stateres: loading auth events: %w", err)
		}
		for _, id := range batch {
			ev, ok := got[id]
			if !ok || ev == nil {
				continue
			}
			if ev.EventID() != id {
				return fmt.Errorf("stateres: loader returned event %s when asked for %s", ev.EventID(), id)
			}
			if ev.Version() != r.version.Version() {
				return fmt.Errorf("stateres: auth event %s has room version %s, resolving for %s", id, ev.Version(), r.version.Version())
			}
			rid, err := checkedRoomID(ev)
			if err != nil {
				return err
			}
			if rid != r.roomID {
				return fmt.Errorf("stateres: auth event %s is in room %s, not %s", id, rid, r.roomID)
			}
			r.addEvent(ev)
			enqueue(id)
		}
	}
	return nil
}

func (r *resolver) addEvent(ev gomatrixserverlib.PDU) {
	id := ev.EventID()
	if _, ok := r.events[id]; ok {
		return
	}
	r.events[id] = ev
	// v12 events list the create event implicitly and a malformed one could
	// list it again; duplicates would skew in-degree counts.
	ids := ev.AuthEventIDs()
	clean := true
	for i, a := range ids {
		if a == id || slices.Contains(ids[:i], a) {
			clean = false
			break
		}
	}
	if !clean {
		dedup := make([]string, 0, len(ids))
		for _, a := range ids {
			if a != id && !slices.Contains(dedup, a) {
				dedup = append(dedup, a)
			}
		}
		ids = dedup
	}
	r.auth[id] = ids
}

func (r *resolver) hasCreateEvent() bool {
	for _, ev := range r.events {
		if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
			return true
		}
	}
	return false
}

func (r *resolver) isRejected(id string) bool {
	rej, ok := r.rejected[id]
	if !ok {
		rej = r.loader.IsRejected(id)
		r.rejected[id] = rej
	}
	return rej
}

// authEventOfKey returns the first loaded auth event of ev with the given key.
// Well-formed events cite at most one per key (auth rule 3.1).
func (r *resolver) authEventOfKey(id string, k stateKey) gomatrixserverlib.PDU {
	for _, a := range r.auth[id] {
		if ev, ok := r.events[a]; ok && ev.Type() == k.Type && ev.StateKeyEquals(k.StateKey) {
			return ev
		}
	}
	return nil
}
