package roomserver

import (
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// Event is a stored room event: the PDU plus what the server knows of it.
type Event struct {
	gomatrixserverlib.PDU
	NID            int64
	RoomNID        int64
	StreamPos      int64 // 0: not visible to clients; negative: backfilled history
	StateBeforeNID int64
	StateAfterNID  int64
	Status         int
	RedactedBy     string // ID of the accepted redaction, if any
	ReplacesNID    int64  // for state events: the event it replaced
	RelatesTo      string
	RelType        string
}

// Tuple is an event's (type, state_key).
func (e *Event) Tuple() gomatrixserverlib.StateKeyTuple {
	return gomatrixserverlib.StateKeyTuple{EventType: e.Type(), StateKey: *e.StateKey()}
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey() != nil }

// eventFromRow parses a stored event. Redacted events come back in their
// redacted form, as everyone (clients, auth, federation) must see them.
func eventFromRow(row storage.EventRow, version gomatrixserverlib.RoomVersion) (*Event, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, err
	}
	js := row.JSON
	if row.RedactedBy != "" {
		if js, err = verImpl.RedactEventJSON(js); err != nil {
			return nil, fmt.Errorf("redacting %s: %w", row.EventID, err)
		}
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(row.EventID, js, row.RedactedBy != "")
	if err != nil {
		return nil, fmt.Errorf("parsing stored event %s: %w", row.EventID, err)
	}
	return &Event{
		PDU: pdu, NID: row.NID, RoomNID: row.RoomNID, StreamPos: row.StreamPos,
		StateBeforeNID: row.StateBeforeNID, StateAfterNID: row.StateAfterNID, Status: row.Status,
		RedactedBy: row.RedactedBy, ReplacesNID: row.ReplacesNID, RelatesTo: row.RelatesTo, RelType: row.RelType,
	}, nil
}

// relation extracts content["m.relates_to"]: the related event and type.
func relation(content []byte) (eventID, relType string) {
	var c struct {
		RelatesTo *struct {
			EventID   string `json:"event_id"`
			RelType   string `json:"rel_type"`
			InReplyTo *struct {
				EventID string `json:"event_id"`
			} `json:"m.in_reply_to"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil {
		return "", ""
	}
	return c.RelatesTo.EventID, c.RelatesTo.RelType
}

// membershipOf returns the membership of an m.room.member event, or "".
func membershipOf(e gomatrixserverlib.PDU) string {
	if e.Type() != spec.MRoomMember {
		return ""
	}
	m, err := e.Membership()
	if err != nil {
		return ""
	}
	return m
}

// userIDForSender maps a sender to a user ID. Veche supports no pseudo-ID
// room versions, so the sender is the user ID; it never returns (nil, nil),
// which would crash gomatrixserverlib's auth code.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}
