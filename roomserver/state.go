package roomserver

import (
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

type tuple = gomatrixserverlib.StateKeyTuple

// stateView is a room state: a base map with overlays of pending changes.
// The actor applies a batch of events to overlays and folds them into the
// base only after the batch committed, so a failed commit leaves the
// in-memory state as the database has it.
type stateView struct {
	base    map[tuple]*Event
	parent  *stateView // nil for the bottom overlay
	changes map[tuple]*Event
}

func newOverlay(parent *stateView) *stateView {
	return &stateView{parent: parent, changes: map[tuple]*Event{}}
}

// Get returns the event at (type, state_key), or nil.
func (s *stateView) Get(typ, stateKey string) *Event {
	k := tuple{EventType: typ, StateKey: stateKey}
	for v := s; v != nil; v = v.parent {
		if v.changes != nil {
			if e, ok := v.changes[k]; ok {
				return e
			}
		}
		if v.base != nil {
			return v.base[k]
		}
	}
	return nil
}

func (s *stateView) set(e *Event) { s.changes[e.Tuple()] = e }

// fold merges the overlay's changes into its parent.
func (s *stateView) fold() {
	target := s.parent.changes
	if target == nil {
		target = s.parent.base
	}
	for k, e := range s.changes {
		target[k] = e
	}
}

// all returns the full state.
func (s *stateView) all() map[tuple]*Event {
	var chain []*stateView
	for v := s; v != nil; v = v.parent {
		chain = append(chain, v)
	}
	out := map[tuple]*Event{}
	for i := len(chain) - 1; i >= 0; i-- {
		for k, e := range chain[i].base {
			out[k] = e
		}
		for k, e := range chain[i].changes {
			out[k] = e
		}
	}
	return out
}

// authProvider exposes the view to gomatrixserverlib's auth rules.
type authProvider struct{ s *stateView }

func (p authProvider) pdu(typ, key string) (gomatrixserverlib.PDU, error) {
	if e := p.s.Get(typ, key); e != nil {
		return e.PDU, nil
	}
	return nil, nil
}
func (p authProvider) Create() (gomatrixserverlib.PDU, error) { return p.pdu(spec.MRoomCreate, "") }
func (p authProvider) JoinRules() (gomatrixserverlib.PDU, error) {
	return p.pdu(spec.MRoomJoinRules, "")
}
func (p authProvider) PowerLevels() (gomatrixserverlib.PDU, error) {
	return p.pdu(spec.MRoomPowerLevels, "")
}
func (p authProvider) Member(stateKey spec.SenderID) (gomatrixserverlib.PDU, error) {
	return p.pdu(spec.MRoomMember, string(stateKey))
}
func (p authProvider) ThirdPartyInvite(stateKey string) (gomatrixserverlib.PDU, error) {
	return p.pdu(spec.MRoomThirdPartyInvite, stateKey)
}
func (p authProvider) Valid() bool { return true }

// membership returns a user's membership in the view ("" if none).
func (s *stateView) membership(userID string) string {
	if e := s.Get(spec.MRoomMember, userID); e != nil {
		return membershipOf(e)
	}
	return ""
}
