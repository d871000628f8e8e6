package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
)

// Knocking over federation (spec: "Knocking upon a room"): the resident
// side answers make_knock and send_knock; the knocking side is Knock,
// which the client API calls for rooms this server is not in. A knock is
// withdrawn like an invite is rejected: a leave out of band.

// knockSupported reports whether a room version's auth rules know the
// knock membership (room version 7 and later).
func knockSupported(version gomatrixserverlib.RoomVersion) bool {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return false
	}
	return verImpl.CheckKnockingAllowed(string(version), "@a:x", "@a:x", spec.Knock, spec.Leave) == nil
}

// makeKnock is GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (f *Federation) makeKnock(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	versions := r.URL.Query()["ver"]
	if len(versions) == 0 {
		// Knocking came with room version 7, after ver became usual.
		return nil, mxerr.MissingParam("ver is required: the room versions your server supports")
	}
	room, err := f.rs.Room(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(versions, room.Version) {
		return nil, mxerr.IncompatibleRoomVersion(room.Version)
	}
	if !knockSupported(gomatrixserverlib.RoomVersion(room.Version)) {
		return nil, mxerr.Forbidden("This room's version does not support knocking")
	}
	// The template is checked against the auth rules: a room whose join
	// rule does not allow knocking, or a banned user, gets M_FORBIDDEN.
	return f.rooms.makeMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("userId"), spec.Knock, versions)
}

// sendKnock is PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}.
func (f *Federation) sendKnock(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	room, _, err := f.rooms.receiveMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("eventId"), spec.Knock, Content(r.Context()))
	if err != nil {
		return nil, err
	}
	// Spec (v1.16): the knock room state holds whole events in the room's
	// format, the create event among them, so that the knocking server
	// can check their signatures.
	state := []json.RawMessage{}
	for _, t := range strippedStateTypes {
		e, err := f.rs.StateEvent(r.Context(), room, t, "")
		if err != nil {
			return nil, err
		}
		if e != nil {
			state = append(state, json.RawMessage(e.JSON()))
		}
	}
	return map[string]any{"knock_room_state": state}, nil
}

// Knock knocks on a room held by other servers for a local user, trying
// each server in turn: make_knock, sign, send_knock. The knock is then
// kept out of band, with the room state the resident server returned in
// its unsigned knock_room_state, which /sync shows in the knock section.
func (f *Federation) Knock(ctx context.Context, userID, roomID string, servers []spec.ServerName, content json.RawMessage) error {
	c, err := contentMap(content)
	if err != nil {
		return err
	}
	var lastErr error = mxerr.NotFound("No server to knock on " + roomID + " through")
	for _, server := range dedupeServers(servers, f.serverName) {
		if f.Denied(server) {
			continue
		}
		err := f.knockVia(ctx, userID, roomID, server, c)
		if err == nil {
			return nil
		}
		f.log.WithField("room_id", roomID).WithField("server", server).WithError(err).Info("Knocking through a server failed")
		lastErr = err
		var mx *mxerr.Error
		if errors.As(err, &mx) && mx.Status == http.StatusForbidden {
			// Refused by the room's rules: other servers will say the same.
			return err
		}
	}
	return lastErr
}

func (f *Federation) knockVia(ctx context.Context, userID, roomID string, server spec.ServerName, content map[string]any) error {
	made, err := f.client.MakeKnock(ctx, f.serverName, server, roomID, userID, supportedVersions())
	if err != nil {
		return remoteError(server, err)
	}
	version := made.RoomVersion
	if !slices.Contains(supportedVersions(), version) {
		return mxerr.UnsupportedRoomVersion("Room version " + string(version) + " is not supported by this server")
	}
	if !knockSupported(version) {
		return mxerr.Forbidden("Room version " + string(version) + " does not support knocking")
	}
	// Spec: a template that is not a knock must be discarded.
	var tmplContent struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(made.KnockEvent.Content, &tmplContent) != nil || tmplContent.Membership != spec.Knock {
		return mxerr.Unavailable(fmt.Sprintf("%s sent a knock template that is not a knock", server))
	}
	knock, err := f.rooms.buildFromTemplate(made.KnockEvent, version, roomID, userID, spec.Knock, content)
	if err != nil {
		return mxerr.Unavailable(fmt.Sprintf("%s sent a bad knock template: %v", server, err))
	}
	var resp struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(knock.EventID())
	if err := f.requestJSON(ctx, http.MethodPut, server, path, json.RawMessage(knock.JSON()), &resp); err != nil {
		return err
	}
	stripped := f.rooms.checkRoomState(ctx, roomID, version, resp.KnockRoomState, server)
	// The room state travels in unsigned, which signatures do not cover;
	// a copy keeps the signed event as it was sent.
	verImpl, _ := gomatrixserverlib.GetRoomVersion(version)
	keep, err := verImpl.NewEventFromTrustedJSON(knock.JSON(), false)
	if err != nil {
		return err
	}
	if len(stripped) > 0 {
		if err := keep.SetUnsignedField("knock_room_state", stripped); err != nil {
			return err
		}
	}
	_, err = f.rs.StoreOutOfBand(ctx, version, keep)
	return err
}

// strippedEvent is a state event as clients see it outside a room (spec:
// "Stripped state").
type strippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
}

// checkRoomState turns the room state a resident server sent with a knock
// (or an invite) into stripped state for clients. Spec (v1.16): entries
// are whole events of the room, and those improperly formatted or signed
// should be dropped. Servers predating v1.16 send stripped events; in
// room versions before 12 those are kept as they are, as the spec allows
// while servers migrate.
func (rf *roomFed) checkRoomState(ctx context.Context, roomID string, version gomatrixserverlib.RoomVersion, raws []json.RawMessage, from spec.ServerName) []strippedEvent {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil
	}
	var (
		pdus   []gomatrixserverlib.PDU
		legacy []strippedEvent
	)
	for _, raw := range raws {
		p, err := parsePDU(raw, version)
		if err == nil {
			if p.StateKey() != nil && p.RoomID().String() == roomID && !p.Redacted() {
				pdus = append(pdus, p)
			}
			continue
		}
		var s strippedEvent
		if verImpl.DomainlessRoomIDs() || json.Unmarshal(raw, &s) != nil || s.Type == "" || s.Sender == "" || !isObject(s.Content) {
			rf.log.WithField("server", from).WithField("room_id", roomID).WithError(err).Debug("Dropping a malformed room state entry")
			continue
		}
		legacy = append(legacy, s)
	}
	out := legacy
	for i, e := range rf.verify(ctx, pdus) {
		if e != nil {
			rf.log.WithField("server", from).WithField("event_id", pdus[i].EventID()).WithError(e).Info("Dropping a room state entry whose signatures fail")
			continue
		}
		p := pdus[i]
		out = append(out, strippedEvent{Type: p.Type(), StateKey: *p.StateKey(), Content: json.RawMessage(p.Content()), Sender: string(p.SenderID())})
	}
	return out
}
