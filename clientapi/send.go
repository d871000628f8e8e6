package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// maxTxnIDBytes bounds client transaction IDs, which are stored.
const maxTxnIDBytes = 255

// readContent reads an event content body: a JSON object.
func readContent(r *http.Request) (json.RawMessage, error) {
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpapi.UnmarshalObject(body, &obj); err != nil {
		return nil, err
	}
	// A NUL character is valid JSON but poison downstream: PostgreSQL's
	// JSON functions refuse any document holding one, and other servers
	// reject such events.
	if bytes.Contains(body, []byte(`\u0000`)) {
		return nil, mxerr.BadJSON("Event content must not contain NUL characters")
	}
	return json.RawMessage(body), nil
}

func validEventType(t string) bool { return t != "" && len(t) <= 255 }

// sendMessage is PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) sendMessage(r *http.Request) (any, error) {
	typ, txnID := r.PathValue("eventType"), r.PathValue("txnId")
	if !validEventType(typ) || txnID == "" || len(txnID) > maxTxnIDBytes {
		return nil, mxerr.InvalidParam("Invalid event type or transaction ID")
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r)
	if typ == "m.room.redaction" {
		return nil, mxerr.InvalidParam("Use the /redact endpoint to redact events")
	}
	if err := a.checkRelation(r, room, me.UserID.String(), typ, content); err != nil {
		return nil, err
	}
	ev, err := a.rs.Send(r.Context(), room.RoomID, roomserver.Build{
		Sender: me.UserID.String(), Type: typ, Content: content,
		Txn: &roomserver.Txn{Localpart: me.Localpart(), DeviceID: me.DeviceID, TxnID: txnID},
	})
	if err != nil {
		return nil, err
	}
	a.markActive(r)
	return map[string]string{"event_id": ev.EventID()}, nil
}

// checkRelation applies the server-side rules on relations: a thread may
// not start at an event that itself relates to another (spec: threading,
// 400 M_UNKNOWN), and a user may not send the same annotation twice
// (spec: M_DUPLICATE_ANNOTATION).
func (a *API) checkRelation(r *http.Request, room storage.Room, sender, typ string, content json.RawMessage) error {
	var c struct {
		RelatesTo *struct {
			EventID string `json:"event_id"`
			RelType string `json:"rel_type"`
			Key     string `json:"key"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.EventID == "" {
		return nil
	}
	rel := c.RelatesTo
	switch rel.RelType {
	case "m.thread":
		parent, err := a.rs.Event(r.Context(), rel.EventID)
		if err != nil || parent.RoomNID != room.NID {
			return nil // unknown parents are the client's business
		}
		if parent.RelatesTo != "" {
			return mxerr.Unknown("Cannot start a thread from an event that relates to another")
		}
	case "m.annotation":
		existing, err := a.db.AnnotationsBy(r.Context(), rel.EventID, sender, typ)
		if err != nil {
			return err
		}
		for _, e := range existing {
			var ec struct {
				RelatesTo struct {
					Key string `json:"key"`
				} `json:"m.relates_to"`
			}
			var wrapper struct {
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(e.JSON, &wrapper) == nil && json.Unmarshal(wrapper.Content, &ec) == nil && ec.RelatesTo.Key == rel.Key {
				return &mxerr.Error{Status: 400, ErrCode: "M_DUPLICATE_ANNOTATION", Message: "You already sent this annotation"}
			}
		}
	}
	return nil
}

// setState is PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) setState(r *http.Request) (any, error) {
	typ, key := r.PathValue("eventType"), r.PathValue("stateKey")
	if !validEventType(typ) || len(key) > 255 {
		return nil, mxerr.InvalidParam("Invalid event type or state key")
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r).UserID.String()
	if typ == spec.MRoomCanonicalAlias {
		if err := a.checkCanonicalAlias(r, room, content); err != nil {
			return nil, err
		}
	}
	// Setting the same content again changes nothing (as in Synapse):
	// answer with the current event instead of sending a duplicate.
	if cur, err := a.rs.StateEvent(r.Context(), room, typ, key); err != nil {
		return nil, err
	} else if cur != nil && string(cur.SenderID()) == me && jsonEqual(cur.Content(), content) {
		return map[string]string{"event_id": cur.EventID()}, nil
	}
	ev, err := a.rs.Send(r.Context(), room.RoomID, roomserver.Build{Sender: me, Type: typ, StateKey: &key, Content: content})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

// checkCanonicalAlias requires the aliases of m.room.canonical_alias to
// point at this room (spec: M_BAD_ALIAS).
func (a *API) checkCanonicalAlias(r *http.Request, room storage.Room, content json.RawMessage) error {
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return mxerr.BadJSON("Invalid m.room.canonical_alias content")
	}
	for _, al := range append([]string{c.Alias}, c.AltAliases...) {
		if al == "" {
			continue
		}
		if err := validateAlias(al); err != nil {
			return mxerr.InvalidParam("Invalid alias " + al)
		}
		got, err := a.db.AliasByName(r.Context(), al)
		if err != nil || got.RoomID != room.RoomID {
			return &mxerr.Error{Status: 400, ErrCode: "M_BAD_ALIAS", Message: "Alias " + al + " does not point to this room"}
		}
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// getStateEvent is GET /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) getStateEvent(r *http.Request) (any, error) {
	room, snap, err := a.roomStateForRequester(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.rs.StateEventAt(r.Context(), room, snap, r.PathValue("eventType"), r.PathValue("stateKey"))
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, mxerr.NotFound("No such state event")
	}
	if r.URL.Query().Get("format") == "event" {
		out, err := a.format.Format(r.Context(), room, []*roomserver.Event{ev}, a.formatOptions(r, false))
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	return &httpapi.Response{Raw: ev.Content(), ContentType: "application/json"}, nil
}

// getState is GET /rooms/{roomId}/state.
func (a *API) getState(r *http.Request) (any, error) {
	room, snap, err := a.roomStateForRequester(r)
	if err != nil {
		return nil, err
	}
	state, err := a.rs.StateAt(r.Context(), room, snap)
	if err != nil {
		return nil, err
	}
	sortEvents(state)
	return a.format.Format(r.Context(), room, state, a.formatOptions(r, false))
}

// sortEvents orders events by stream position, then event ID, so that
// answers are stable.
func sortEvents(evs []*roomserver.Event) {
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].StreamPos != evs[j].StreamPos {
			return evs[i].StreamPos < evs[j].StreamPos
		}
		return evs[i].EventID() < evs[j].EventID()
	})
}

// getEvent is GET /rooms/{roomId}/event/{eventId}.
func (a *API) getEvent(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.rs.Event(r.Context(), r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	// Events the requester may not see are as good as missing (spec).
	notFound := mxerr.NotFound("Event not found")
	if ev.RoomNID != room.NID || ev.StreamPos == 0 {
		return nil, notFound
	}
	visible, err := a.rs.FilterVisible(r.Context(), room, requester(r).UserID.String(), []*roomserver.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, notFound
	}
	out, err := a.format.Format(r.Context(), room, visible, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// redact is PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(r *http.Request) (any, error) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	txnID := r.PathValue("txnId")
	if txnID == "" || len(txnID) > maxTxnIDBytes {
		return nil, mxerr.InvalidParam("Invalid transaction ID")
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r)
	ev, err := a.rs.Redact(r.Context(), room, me.UserID.String(), r.PathValue("eventId"), body.Reason,
		&roomserver.Txn{Localpart: me.Localpart(), DeviceID: me.DeviceID, TxnID: txnID})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}
