// Package clientevent renders room events the way the Client-Server API
// shows them: the client format with its unsigned data (age, the
// sender's transaction ID, prev_content, redacted_because) and the
// bundled aggregations of their child events (unsigned["m.relations"]).
package clientevent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// Event is an event in the client format (spec: "ClientEvent").
type Event struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       *Unsigned       `json:"unsigned,omitempty"`
}

// Unsigned is the server-added data of a client event.
type Unsigned struct {
	Age             int64           `json:"age"`
	TransactionID   string          `json:"transaction_id,omitempty"`
	PrevContent     json.RawMessage `json:"prev_content,omitempty"`
	PrevSender      string          `json:"prev_sender,omitempty"`
	ReplacesState   string          `json:"replaces_state,omitempty"`
	RedactedBecause *Event          `json:"redacted_because,omitempty"`
	InviteRoomState json.RawMessage `json:"invite_room_state,omitempty"`
	// Relations holds the bundled aggregations by rel_type: *Event for
	// m.replace, *ThreadSummary for m.thread, *References for m.reference.
	Relations map[string]any `json:"m.relations,omitempty"`
}

// Options say for whom and how events are rendered.
type Options struct {
	// Localpart and DeviceID identify the reader: transaction IDs are
	// shown only to the device that sent the event.
	Localpart, DeviceID string
	// UserID is the reader's full user ID; empty means Localpart on this
	// server. Bundled aggregations only include what the reader may see.
	UserID string
	// OmitRoomID drops room_id (sync timelines, where the room is the key).
	OmitRoomID bool
	// NoAggregations leaves out unsigned["m.relations"], which costs a few
	// queries per call (the spec asks for it in /sync only in limited
	// timelines).
	NoAggregations bool
	// Ignored, when set, is the reader's ignored users, saving a lookup
	// per call for callers that know it.
	Ignored map[string]bool
}

// Formatter renders events, loading what their unsigned data refers to.
type Formatter struct {
	RS  *roomserver.Roomserver
	DB  *storage.DB
	Now func() time.Time
}

// Format renders events of one room, in order. Whatever the number of
// events, it costs a fixed number of queries (see aggregate), plus the
// roomserver's visibility checks of the aggregated children.
func (f *Formatter) Format(ctx context.Context, room storage.Room, events []*roomserver.Event, o Options) ([]Event, error) {
	out := make([]Event, len(events))
	if len(events) == 0 {
		return out, nil
	}
	agg := &aggregations{}
	if !o.NoAggregations {
		var err error
		if agg, err = f.aggregate(ctx, room, events, o); err != nil {
			return nil, err
		}
	}
	// Transaction IDs exist only for the reader's own events.
	me := f.readerID(o)
	ids := make([]string, 0, len(events))
	var replaced []int64
	var redactions []string
	for _, e := range events {
		if string(e.SenderID()) == me {
			ids = append(ids, e.EventID())
		}
		if e.ReplacesNID != 0 {
			replaced = append(replaced, e.ReplacesNID)
		}
		if e.RedactedBy != "" {
			redactions = append(redactions, e.RedactedBy)
		}
	}
	ids = append(ids, agg.eventIDs()...)
	txns := map[string]string{}
	if o.DeviceID != "" && len(ids) > 0 {
		var err error
		if txns, err = f.DB.TransactionIDs(ctx, o.Localpart, o.DeviceID, ids); err != nil {
			return nil, err
		}
	}
	prev := map[int64]*roomserver.Event{}
	if len(replaced) > 0 {
		evs, err := f.RS.Events(ctx, room, replaced)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			prev[e.NID] = e
		}
	}
	because := map[string]*roomserver.Event{}
	if len(redactions) > 0 {
		rows, err := f.DB.EventsByID(ctx, redactions)
		if err != nil {
			return nil, err
		}
		evs, err := f.RS.EventRows(room, rows)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			because[e.EventID()] = e
		}
	}
	now := f.Now().UnixMilli()
	// child renders an aggregated event "in the same form as the event
	// itself" (spec), with its own bundled edit.
	var child func(e *roomserver.Event) *Event
	child = func(e *roomserver.Event) *Event {
		ce := f.basic(e, room.RoomID, o, now)
		ce.Unsigned.TransactionID = txns[e.EventID()]
		if edit := agg.edits[e.EventID()]; edit != nil {
			ce.Unsigned.Relations = map[string]any{storage.RelReplace: child(edit)}
		}
		return &ce
	}
	for i, e := range events {
		ce := f.basic(e, room.RoomID, o, now)
		ce.Unsigned.TransactionID = txns[e.EventID()]
		if p := prev[e.ReplacesNID]; p != nil {
			ce.Unsigned.PrevContent = p.Content()
			ce.Unsigned.PrevSender = string(p.SenderID())
			ce.Unsigned.ReplacesState = p.EventID()
		}
		if r := because[e.RedactedBy]; r != nil {
			rc := f.basic(r, room.RoomID, o, now)
			ce.Unsigned.RedactedBecause = &rc
		}
		ce.Unsigned.Relations = agg.bundle(e, child)
		out[i] = ce
	}
	return out, nil
}

func (f *Formatter) basic(e *roomserver.Event, roomID string, o Options, now int64) Event {
	ce := Event{
		Content: e.Content(), EventID: e.EventID(), OriginServerTS: int64(e.OriginServerTS()), Sender: string(e.SenderID()),
		StateKey: e.StateKey(), Type: e.Type(), Redacts: e.Redacts(),
		Unsigned: &Unsigned{Age: max(0, now-int64(e.OriginServerTS()))},
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage(`{}`)
	}
	if !o.OmitRoomID {
		ce.RoomID = roomID
	}
	return ce
}
