package roomserver

import (
	"encoding/json"
	"math"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// PowerLevels answers "what may this user do" for clients and checks,
// including what gomatrixserverlib's PowerLevelContent leaves out: room
// creators' unlimited power in room version 12, and the creator's 100
// when a room has no power levels event.
type PowerLevels struct {
	gomatrixserverlib.PowerLevelContent
	creators map[string]bool // privileged creators (v12+)
	// noEvent: the room has no m.room.power_levels; the create sender has 100.
	noEvent    bool
	createUser string
}

// CreatorPowerLevel stands for a v12 creator's unlimited power.
const CreatorPowerLevel = math.MaxInt64

func newPowerLevels(pl, create *Event) (*PowerLevels, error) {
	p := &PowerLevels{creators: map[string]bool{}}
	p.Defaults()
	if create != nil {
		p.createUser = string(create.SenderID())
		if verImpl, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && verImpl.PrivilegedCreators() {
			p.creators[p.createUser] = true
			var c struct {
				AdditionalCreators []string `json:"additional_creators"`
			}
			if json.Unmarshal(create.Content(), &c) == nil {
				for _, u := range c.AdditionalCreators {
					p.creators[u] = true
				}
			}
		}
	}
	if pl == nil {
		p.noEvent = true
		// Without a power levels event every state event needs 50 and
		// everything else 0, as the spec's defaults say.
		p.Users = map[string]int64{}
		return p, nil
	}
	c, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl.PDU)
	if err != nil {
		return nil, err
	}
	p.PowerLevelContent = c
	return p, nil
}

// UserLevel is a user's power level.
func (p *PowerLevels) UserLevel(userID string) int64 {
	if p.creators[userID] {
		return CreatorPowerLevel
	}
	if p.noEvent {
		if userID == p.createUser {
			return 100
		}
		return 0
	}
	return p.PowerLevelContent.UserLevel(spec.SenderID(userID))
}

// CanSend reports whether a user may send an event of this type.
func (p *PowerLevels) CanSend(userID, eventType string, isState bool) bool {
	return p.UserLevel(userID) >= p.EventLevel(eventType, isState)
}

// powerLevel reads a user's level from an in-memory view.
func powerLevel(view *stateView, userID string) int64 {
	p, err := newPowerLevels(view.Get(spec.MRoomPowerLevels, ""), view.Get(spec.MRoomCreate, ""))
	if err != nil {
		return 0
	}
	return p.UserLevel(userID)
}

// redactLevel reads the redact level from an in-memory view.
func redactLevel(view *stateView) int64 {
	p, err := newPowerLevels(view.Get(spec.MRoomPowerLevels, ""), view.Get(spec.MRoomCreate, ""))
	if err != nil {
		return 50
	}
	return p.Redact
}
