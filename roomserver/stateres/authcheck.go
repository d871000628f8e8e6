package stateres

import (
	"errors"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// iterativeAuthChecks applies, in order, each event that passes the auth
// rules against partial, updating partial as it goes.
func (r *resolver) iterativeAuthChecks(partial map[stateKey]gomatrixserverlib.PDU, events []gomatrixserverlib.PDU) {
	for _, ev := range events {
		// A rejected event must never enter the state, whatever the
		// partial state would now allow.
		if r.isRejected(ev.EventID()) {
			continue
		}
		if r.allowed(ev, partial) {
			partial[keyOf(ev)] = ev
		}
	}
}

// allowed runs gomatrixserverlib.Allowed with, for each (type, state_key) the
// auth rules need, the partial state's event, or failing that the event's own
// non-rejected auth event for that key.
func (r *resolver) allowed(ev gomatrixserverlib.PDU, partial map[stateKey]gomatrixserverlib.PDU) bool {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	authState := make([]gomatrixserverlib.PDU, 0, 6)
	hasCreate := false
	for _, t := range needed.Tuples() {
		k := stateKey{Type: t.EventType, StateKey: t.StateKey}
		var chosen gomatrixserverlib.PDU
		// Mirror Synapse: a rejected event in the partial state is no
		// better than none, so fall back to the event's own auth event.
		if st, ok := partial[k]; ok && !r.isRejected(st.EventID()) {
			chosen = st
		} else if a := r.authEventOfKey(ev.EventID(), k); a != nil && !r.isRejected(a.EventID()) {
			chosen = a
		}
		if chosen != nil {
			authState = append(authState, chosen)
			hasCreate = hasCreate || k == createKey
		}
	}
	// gomatrixserverlib dereferences a missing create event in its power
	// level lookup; no event but the create event itself can pass without it.
	if !hasCreate && !(ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("")) {
		return false
	}
	return passesAuthRules(ev, authState)
}

// passesAuthRules reports whether ev is allowed by the given auth state.
func passesAuthRules(ev gomatrixserverlib.PDU, authState []gomatrixserverlib.PDU) (ok bool) {
	// A panic inside the auth rules means gomatrixserverlib could not make
	// sense of this event or its auth events; such an event cannot be
	// authorised, and refusing it keeps one malformed event from blocking
	// the resolution of the whole room.
	defer func() {
		if p := recover(); p != nil {
			ok = false
		}
	}()
	provider, err := gomatrixserverlib.NewAuthEvents(authState)
	if err != nil {
		return false
	}
	return gomatrixserverlib.Allowed(ev, provider, userIDForSender) == nil
}

// userIDForSender maps a sender to its user ID. It never returns (nil, nil),
// which gomatrixserverlib would dereference. User IDs that this version of
// gomatrixserverlib refuses but the spec's historical grammar and Synapse
// accept (such as non-ASCII localparts) are mapped to a stand-in on the same
// server: the auth rules only look at the domain (m.federate) and at
// whether the ID is well formed.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	s := string(senderID)
	if u, err := spec.NewUserID(s, true); err == nil {
		return u, nil
	}
	local, domain, found := strings.Cut(strings.TrimPrefix(s, "@"), ":")
	if !strings.HasPrefix(s, "@") || !found || local == "" {
		return nil, errors.New("stateres: sender is not a user ID: " + s)
	}
	u, err := spec.NewUserID("@_:"+domain, true)
	if err != nil {
		return nil, errors.New("stateres: sender is not a user ID: " + s)
	}
	return u, nil
}
