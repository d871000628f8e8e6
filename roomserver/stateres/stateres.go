// Package stateres resolves the state of a room across forks of its DAG.
//
// It implements state resolution v2 (room versions 2–11) and v2.1 (room
// version 12) as written in the Matrix specification, on top of the exported
// building blocks of gomatrixserverlib (auth rules, power level parsing, room
// versions). gomatrixserverlib's own v2 and v2.1 resolvers are not used: its
// v2.1 drops state and panics, its v2 path is what it runs for v12, and both
// disagree with the specification on rejected events and on the power of a
// room creator without power levels. Room version 1 is delegated to
// gomatrixserverlib's v1 resolver.
//
// Where the specification's wording admits two readings, the package does
// what Synapse and Ruma do, because resolution is only useful if every server
// reaches the same state: a state set's full auth chain includes the set's own
// events, the reverse topological power ordering follows only the auth links
// between the events being sorted, and rejected events never enter the state.
package stateres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
)

// EventLoader provides events by ID (auth chains are walked through it) and
// whether an event was rejected.
type EventLoader interface {
	// Events returns the events it knows among eventIDs, keyed by event ID.
	// Unknown IDs are left out of the map rather than reported as errors:
	// the resolver treats them as absent from the auth DAG, as other
	// homeservers do when part of an auth chain was never fetched.
	Events(ctx context.Context, eventIDs []string) (map[string]gomatrixserverlib.PDU, error)
	// IsRejected reports whether the event was rejected when it was received.
	// A rejected event is never let into the state by the iterative auth
	// checks and never used as an auth event for another event, as Synapse
	// does. (The spec would re-admit events rejected only against the state
	// before them; report those as not rejected to get that behaviour.)
	// Events of the unconflicted state map are kept whatever this says.
	IsRejected(eventID string) bool
}

// ErrMissingCreateEvent is returned when conflicts have to be resolved but the
// room's m.room.create event is neither in the state sets nor reachable through
// the auth chains; without it no event can pass the auth rules, and resolving
// anyway would silently empty the room state.
var ErrMissingCreateEvent = errors.New("stateres: m.room.create event not found in the state sets or their auth chains")

// Resolve returns the resolved state (one event per (type, state_key)) of
// the given state sets, each a full room state from one fork.
func Resolve(ctx context.Context, version gomatrixserverlib.IRoomVersion, stateSets [][]gomatrixserverlib.PDU, loader EventLoader) (resolved []gomatrixserverlib.PDU, err error) {
	// gomatrixserverlib panics on several kinds of malformed events (bad room
	// IDs, unparseable create content, nil auth state); one bad remote event
	// must not take the roomserver down.
	defer func() {
		if p := recover(); p != nil {
			resolved = nil
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	if version == nil {
		return nil, errors.New("stateres: nil room version")
	}
	if loader == nil {
		return nil, errors.New("stateres: nil event loader")
	}
	if version.Version() == gomatrixserverlib.RoomVersionPseudoIDs {
		// Senders are per-room keys there, and the auth checks would need a
		// sender-to-user mapping that this package does not have.
		return nil, fmt.Errorf("stateres: room version %s is not supported", version.Version())
	}
	algo := version.StateResAlgorithm()
	if algo != gomatrixserverlib.StateResV1 && algo != gomatrixserverlib.StateResV2 && algo != gomatrixserverlib.StateResV2_1 {
		return nil, fmt.Errorf("stateres: room version %s uses unknown state resolution algorithm %d", version.Version(), algo)
	}

	sets, roomID, err := indexStateSets(version, stateSets)
	if err != nil {
		return nil, err
	}
	if len(sets) == 0 {
		return nil, nil
	}

	if algo == gomatrixserverlib.StateResV1 {
		return resolveV1(sets), nil
	}

	unconflicted, conflicted := splitConflicts(sets)
	if len(conflicted) == 0 {
		// Identical state sets have identical auth chains, so the auth
		// difference (and the conflicted subgraph) is empty as well.
		return sortedState(unconflicted), nil
	}

	r := &resolver{
		ctx:      ctx,
		version:  version,
		loader:   loader,
		roomID:   roomID,
		v21:      algo == gomatrixserverlib.StateResV2_1,
		rejected: make(map[string]bool),
		plCache:  make(map[string]*gomatrixserverlib.PowerLevelContent),
	}
	return r.resolve(sets, unconflicted, conflicted)
}

// PanicError reports a panic caught while resolving, typically raised by
// gomatrixserverlib on malformed input. The stack is kept for logs but left
// out of Error() so the message stays one line.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("stateres: panic during state resolution: %v", e.Value)
}

// stateKey is the (type, state_key) pair a state map is keyed by.
type stateKey struct {
	Type     string
	StateKey string
}

func keyOf(ev gomatrixserverlib.PDU) stateKey {
	return stateKey{Type: ev.Type(), StateKey: *ev.StateKey()}
}

func isState(ev gomatrixserverlib.PDU) bool {
	return ev != nil && ev.StateKey() != nil
}

// indexStateSets turns the caller's slices into state maps and refuses input
// that has no single meaning: events from another room or room version,
// non-state events, or two different events for one key in the same set.
func indexStateSets(version gomatrixserverlib.IRoomVersion, stateSets [][]gomatrixserverlib.PDU) ([]map[stateKey]gomatrixserverlib.PDU, string, error) {
	var roomID string
	// Forks share most of their state; each event's room is checked once.
	hint := 0
	if len(stateSets) > 0 {
		hint = len(stateSets[0])
	}
	checked := make(map[string]struct{}, hint)
	sets := make([]map[stateKey]gomatrixserverlib.PDU, 0, len(stateSets))
	for i, set := range stateSets {
		m := make(map[stateKey]gomatrixserverlib.PDU, len(set))
		for _, ev := range set {
			if ev == nil {
				return nil, "", fmt.Errorf("stateres: state set %d contains a nil event", i)
			}
			if ev.StateKey() == nil {
				return nil, "", fmt.Errorf("stateres: state set %d contains non-state event %s", i, ev.EventID())
			}
			if ev.Version() != version.Version() {
				return nil, "", fmt.Errorf("stateres: event %s has room version %s, resolving for %s", ev.EventID(), ev.Version(), version.Version())
			}
			if _, ok := checked[ev.EventID()]; !ok {
				checked[ev.EventID()] = struct{}{}
				rid, err := checkedRoomID(ev)
				if err != nil {
					return nil, "", err
				}
				if roomID == "" {
					roomID = rid
				} else if rid != roomID {
					return nil, "", fmt.Errorf("stateres: event %s is in room %s, not %s", ev.EventID(), rid, roomID)
				}
			}
			k := keyOf(ev)
			if prev, ok := m[k]; ok && prev.EventID() != ev.EventID() {
				return nil, "", fmt.Errorf("stateres: state set %d has both %s and %s for (%q, %q)", i, prev.EventID(), ev.EventID(), k.Type, k.StateKey)
			}
			m[k] = ev
		}
		sets = append(sets, m)
	}
	return sets, roomID, nil
}

// checkedRoomID reads the room ID without letting PDU.RoomID's panic on a
// malformed room_id escape as anything but an error tied to the event.
func checkedRoomID(ev gomatrixserverlib.PDU) (rid string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("stateres: event %s has an invalid room ID: %v", ev.EventID(), p)
		}
	}()
	// RoomID validates the ID and panics when it is malformed.
	roomID := ev.RoomID()
	return roomID.String(), nil
}

// splitConflicts applies the v2 definition: a key is unconflicted only if every
// set holds the same event for it; every other event is conflicted, including
// one for a key that some sets lack altogether.
func splitConflicts(sets []map[stateKey]gomatrixserverlib.PDU) (map[stateKey]gomatrixserverlib.PDU, map[string]gomatrixserverlib.PDU) {
	unconflicted := make(map[stateKey]gomatrixserverlib.PDU, len(sets[0]))
	conflicted := make(map[string]gomatrixserverlib.PDU)
	addConflicted := func(k stateKey) {
		for _, set := range sets {
			if ev, ok := set[k]; ok {
				conflicted[ev.EventID()] = ev
			}
		}
	}
	for k, first := range sets[0] {
		same := true
		for _, other := range sets[1:] {
			if ev, ok := other[k]; !ok || ev.EventID() != first.EventID() {
				same = false
				break
			}
		}
		if same {
			unconflicted[k] = first
		} else {
			addConflicted(k)
		}
	}
	// Keys the first set lacks are conflicted by definition.
	for _, set := range sets[1:] {
		for k := range set {
			if _, ok := sets[0][k]; !ok {
				addConflicted(k)
			}
		}
	}
	return unconflicted, conflicted
}

// resolveV1 hands room version 1 to gomatrixserverlib. v1 calls a key
// conflicted only when the sets disagree on its value, and auths the
// conflicted events against the unconflicted state (as Synapse does), so no
// auth chains are needed.
func resolveV1(sets []map[stateKey]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	byKey := make(map[stateKey]map[string]gomatrixserverlib.PDU)
	for _, set := range sets {
		for k, ev := range set {
			if byKey[k] == nil {
				byKey[k] = make(map[string]gomatrixserverlib.PDU, 1)
			}
			byKey[k][ev.EventID()] = ev
		}
	}
	unconflicted := make(map[stateKey]gomatrixserverlib.PDU, len(byKey))
	var conflicted, authEvents []gomatrixserverlib.PDU
	for k, evs := range byKey {
		if len(evs) == 1 {
			for _, ev := range evs {
				unconflicted[k] = ev
				authEvents = append(authEvents, ev)
			}
			continue
		}
		for _, ev := range evs {
			conflicted = append(conflicted, ev)
		}
	}
	// The v1 resolver breaks some ties by input order.
	slices.SortFunc(conflicted, func(a, b gomatrixserverlib.PDU) int { return cmp.Compare(a.EventID(), b.EventID()) })
	slices.SortFunc(authEvents, func(a, b gomatrixserverlib.PDU) int { return cmp.Compare(a.EventID(), b.EventID()) })
	state := make(map[stateKey]gomatrixserverlib.PDU, len(byKey))
	for _, ev := range gomatrixserverlib.ResolveStateConflicts(conflicted, authEvents, userIDForSender) {
		if isState(ev) {
			state[keyOf(ev)] = ev
		}
	}
	for k, ev := range unconflicted {
		state[k] = ev
	}
	return sortedState(state)
}

// sortedState flattens a state map in (type, state_key) order so that callers
// can compare and store results byte for byte.
func sortedState(state map[stateKey]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	keys := make([]stateKey, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b stateKey) int {
		if c := cmp.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return cmp.Compare(a.StateKey, b.StateKey)
	})
	out := make([]gomatrixserverlib.PDU, len(keys))
	for i, k := range keys {
		out[i] = state[k]
	}
	return out
}
