package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// Membership over federation (spec: "Joining Rooms", "Inviting to a
// room", "Leaving Rooms (Rejecting Invites)", "Knocking"): the outbound
// halves that local users' requests start, and the inbound halves other
// servers call.

// supportedVersions are the room versions this server can join.
func supportedVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for v := range gomatrixserverlib.StableRoomVersions() {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// templateProto turns a make_* answer into an event to build: the
// resident server's fields with this server's content merged over them.
func templateProto(tmpl gomatrixserverlib.ProtoEvent, content map[string]any, membership string) (gomatrixserverlib.ProtoEvent, error) {
	merged := map[string]any{}
	if len(tmpl.Content) > 0 {
		if err := json.Unmarshal(tmpl.Content, &merged); err != nil {
			return tmpl, fmt.Errorf("template content: %w", err)
		}
	}
	for k, v := range content {
		merged[k] = v
	}
	merged["membership"] = membership
	raw, err := json.Marshal(merged)
	if err != nil {
		return tmpl, err
	}
	tmpl.Content = raw
	return tmpl, nil
}

// buildFromTemplate checks that a make_* template is the event asked for
// and signs it as ours.
func (rf *roomFed) buildFromTemplate(tmpl gomatrixserverlib.ProtoEvent, version gomatrixserverlib.RoomVersion, roomID, userID, membership string, content map[string]any) (gomatrixserverlib.PDU, error) {
	if tmpl.Type != spec.MRoomMember || tmpl.StateKey == nil || *tmpl.StateKey != userID || tmpl.SenderID != userID || tmpl.RoomID != roomID {
		return nil, errors.New("the resident server's template is not the membership event asked for")
	}
	proto, err := templateProto(tmpl, content, membership)
	if err != nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, mxerr.UnsupportedRoomVersion("Room version " + string(version) + " is not supported")
	}
	var pdu gomatrixserverlib.PDU
	err = safely(func() error {
		var err error
		pdu, err = verImpl.NewEventBuilderFromProtoEvent(&proto).Build(rf.now(), rf.serverName, rf.key.ID, rf.key.PrivateKey)
		return err
	})
	return pdu, err
}

// performJoin joins a local user to a room held by other servers, trying
// each candidate server in turn: make_join, sign, send_join, then the
// returned state and auth chain become the room's starting point here.
func (rf *roomFed) performJoin(ctx context.Context, userID, roomID string, servers []spec.ServerName, content map[string]any) error {
	var lastErr error = mxerr.NotFound("No server to join " + roomID + " through")
	for _, server := range dedupeServers(servers, rf.serverName) {
		err := rf.joinVia(ctx, userID, roomID, server, content)
		if err == nil {
			return nil
		}
		rf.log.WithField("room_id", roomID).WithField("server", server).WithError(err).Info("Joining through a server failed")
		lastErr = err
		var mx *mxerr.Error
		if errors.As(err, &mx) && mx.Status == 403 {
			// Refused by the room's rules: other servers will say the same.
			return err
		}
	}
	return lastErr
}

func dedupeServers(servers []spec.ServerName, self spec.ServerName) []spec.ServerName {
	var out []spec.ServerName
	for _, s := range servers {
		if s != "" && s != self && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// remoteError turns a failed federation call into the error a client
// gets: the remote server's Matrix error (403, 404, version errors) where
// it sent one, M_UNAVAILABLE-style 502 otherwise.
func remoteError(server spec.ServerName, err error) error {
	var httpErr gomatrix.HTTPError
	if errors.As(err, &httpErr) {
		var body struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(httpErr.Contents, &body) == nil && body.ErrCode != "" && httpErr.Code >= 400 && httpErr.Code < 500 {
			return &mxerr.Error{Status: httpErr.Code, ErrCode: body.ErrCode, Message: fmt.Sprintf("%s: %s", server, body.Error)}
		}
	}
	return &mxerr.Error{Status: 502, ErrCode: "M_UNKNOWN", Message: fmt.Sprintf("Could not complete the request with %s: %v", server, err)}
}

func (rf *roomFed) joinVia(ctx context.Context, userID, roomID string, server spec.ServerName, content map[string]any) error {
	made, err := rf.client.MakeJoin(ctx, rf.serverName, server, roomID, userID)
	if err != nil {
		return remoteError(server, err)
	}
	version := made.RoomVersion
	if version == "" {
		version = gomatrixserverlib.RoomVersionV1 // spec: absent means v1
	}
	if !slices.Contains(supportedVersions(), version) {
		return mxerr.UnsupportedRoomVersion("Room version " + string(version) + " is not supported by this server")
	}
	join, err := rf.buildFromTemplate(made.JoinEvent, version, roomID, userID, spec.Join, content)
	if err != nil {
		return mxerr.Unavailable(fmt.Sprintf("%s sent a bad join template: %v", server, err))
	}
	resp, err := rf.client.SendJoin(ctx, rf.serverName, server, join)
	if err != nil {
		return remoteError(server, err)
	}
	room := storage.Room{RoomID: roomID, Version: string(version)}
	if len(resp.Event) > 0 {
		// A restricted join comes back signed by the resident server too.
		signed, err := parsePDU(resp.Event, version)
		if err != nil || signed.EventID() != join.EventID() {
			return mxerr.Unavailable(fmt.Sprintf("%s returned a different join event", server))
		}
		if errs := rf.verify(ctx, []gomatrixserverlib.PDU{signed}); errs[0] != nil {
			return mxerr.Unavailable(fmt.Sprintf("%s returned a join event with bad signatures: %v", server, errs[0]))
		}
		join = signed
	}
	log := rf.log.WithField("room_id", roomID).WithField("server", server)
	started := rf.now()
	state := rf.parseVerified(ctx, raws(resp.StateEvents), room, server)
	chain := rf.parseVerified(ctx, raws(resp.AuthEvents), room, server)
	if len(state) == 0 {
		return mxerr.Unavailable(fmt.Sprintf("%s returned no usable room state", server))
	}
	verified := rf.now()
	log.WithField("state", len(state)).WithField("auth_chain", len(chain)).WithField("verify_ms", verified.Sub(started).Milliseconds()).
		Info("Storing the state of a joined room")
	defer func() {
		log.WithField("store_ms", rf.now().Sub(verified).Milliseconds()).Info("Stored the state of a joined room")
	}()
	stored, err := rf.rs.Room(ctx, roomID)
	if err == nil {
		room = stored
	}
	// The room row may not exist yet: StoreOutliers creates it.
	if err := rf.storeOutliers(ctx, server, room, append(chain, state...)); err != nil {
		return err
	}
	stateIDs := make([]string, 0, len(state))
	for _, e := range state {
		stateIDs = append(stateIDs, e.EventID())
	}
	res, err := rf.rs.InputWithState(ctx, roomID, join, stateIDs, state...)
	if err != nil {
		return err
	}
	if res.Status != roomserver.InputAccepted && res.Status != roomserver.InputDuplicate {
		return mxerr.Forbidden("The join was not allowed by the room's state: " + res.Reason)
	}
	return nil
}

// makeMembership answers make_join, make_leave and make_knock: a
// template event for a user of the asking server, built on the room's
// current state.
func (rf *roomFed) makeMembership(ctx context.Context, origin spec.ServerName, roomID, userID, membership string, versions []string) (any, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if uid.Domain() != origin {
		return nil, mxerr.Forbidden("The user does not belong to the requesting server")
	}
	room, err := rf.rs.Room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if membership != spec.Leave && versions != nil && !slices.Contains(versions, room.Version) {
		return nil, mxerr.IncompatibleRoomVersion(room.Version)
	}
	content := map[string]any{"membership": membership}
	if membership == spec.Join {
		authoriser, err := rf.rs.RestrictedJoinAuthoriser(ctx, room, userID)
		if err != nil {
			return nil, err
		}
		if authoriser != "" {
			content["join_authorised_via_users_server"] = authoriser
		}
	}
	raw, _ := json.Marshal(content)
	ev, _, err := rf.rs.BuildTemplate(ctx, gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID, Content: raw,
	})
	if err != nil {
		return nil, err
	}
	var tmpl map[string]any
	if err := json.Unmarshal(ev.JSON(), &tmpl); err != nil {
		return nil, err
	}
	// The asking server signs its own version; ours would only mislead.
	for _, k := range []string{"signatures", "hashes", "event_id", "unsigned"} {
		delete(tmpl, k)
	}
	return map[string]any{"event": tmpl, "room_version": room.Version}, nil
}

// receiveMembership checks a signed membership event sent to send_join,
// send_leave or send_knock and inputs it. It returns the event as stored
// (with our signature added for restricted joins).
func (rf *roomFed) receiveMembership(ctx context.Context, origin spec.ServerName, roomID, eventID, membership string, body []byte) (storage.Room, gomatrixserverlib.PDU, error) {
	room, err := rf.rs.Room(ctx, roomID)
	if err != nil {
		return room, nil, err
	}
	pdu, err := parsePDU(body, gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return room, nil, mxerr.BadJSON("Invalid event: " + err.Error())
	}
	if pdu.EventID() != eventID {
		return room, nil, mxerr.BadJSON("The event ID does not match the path")
	}
	if pdu.RoomID().String() != roomID {
		return room, nil, mxerr.BadJSON("The event is for another room")
	}
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || *pdu.StateKey() != string(pdu.SenderID()) {
		return room, nil, mxerr.BadJSON("The event is not a membership event of its sender")
	}
	if m := membershipOf(pdu); m != membership {
		return room, nil, mxerr.BadJSON(fmt.Sprintf("The membership is %q, not %q", m, membership))
	}
	sender, err := spec.NewUserID(string(pdu.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		return room, nil, mxerr.Forbidden("The sender does not belong to the requesting server")
	}
	if pdu.Redacted() {
		return room, nil, mxerr.BadJSON("The event's content hash does not match")
	}
	if membership == spec.Join {
		var c struct {
			Via string `json:"join_authorised_via_users_server"`
		}
		_ = json.Unmarshal(pdu.Content(), &c)
		if c.Via != "" {
			via, err := spec.NewUserID(c.Via, true)
			if err != nil || via.Domain() != rf.serverName {
				return room, nil, mxerr.BadJSON("join_authorised_via_users_server is not a user of this server")
			}
			// Vouch for the join by signing it (spec: restricted rooms).
			verImpl, _ := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
			signed := pdu.Sign(string(rf.serverName), rf.key.ID, rf.key.PrivateKey)
			// Sign loses the v12 event type; parse the result again.
			if pdu, err = verImpl.NewEventFromTrustedJSON(signed.JSON(), false); err != nil {
				return room, nil, err
			}
		}
	}
	// After our own signature (restricted joins need it), every required
	// signature must verify.
	if errs := rf.verify(ctx, []gomatrixserverlib.PDU{pdu}); errs[0] != nil {
		return room, nil, mxerr.Forbidden("The event's signatures are not valid: " + errs[0].Error())
	}
	res, err := rf.rs.Input(ctx, roomID, []gomatrixserverlib.PDU{pdu})
	var missing *roomserver.MissingEventsError
	if errors.As(err, &missing) {
		return room, nil, mxerr.Forbidden("The event is not based on this server's view of the room")
	}
	if err != nil {
		return room, nil, err
	}
	switch res[0].Status {
	case roomserver.InputRejected, roomserver.InputSoftFailed:
		return room, nil, mxerr.Forbidden("The event is not allowed: " + res[0].Reason)
	}
	stored, err := rf.rs.Event(ctx, pdu.EventID())
	if err != nil {
		return room, nil, err
	}
	if stored.Status != storage.EventAccepted {
		return room, nil, mxerr.Forbidden("The event was not accepted: it is " + roomserver.InputStatus(stored.Status).String())
	}
	return room, pdu, nil
}

// sendJoinResponse builds the answer to send_join: the state before the
// join and its auth chain, optionally without membership events.
func (rf *roomFed) sendJoinResponse(ctx context.Context, room storage.Room, join gomatrixserverlib.PDU, omitMembers bool) (*fclient.RespSendJoin, error) {
	state, err := rf.rs.StateBefore(ctx, room, join.EventID())
	if err != nil {
		return nil, err
	}
	resp := &fclient.RespSendJoin{Origin: rf.serverName, Event: join.JSON(), MembersOmitted: omitMembers}
	var kept []gomatrixserverlib.PDU
	servers := map[string]bool{}
	for _, e := range state {
		if e.Type() == spec.MRoomMember {
			if membershipOf(e) == spec.Join {
				if uid, err := spec.NewUserID(*e.StateKey(), true); err == nil {
					servers[string(uid.Domain())] = true
				}
			}
			if omitMembers {
				continue
			}
		}
		kept = append(kept, e.PDU)
		resp.StateEvents = append(resp.StateEvents, e.JSON())
	}
	chain, err := rf.rs.AuthChain(ctx, room, append(kept, join))
	if err != nil {
		return nil, err
	}
	for _, e := range chain {
		resp.AuthEvents = append(resp.AuthEvents, e.JSON())
	}
	if omitMembers {
		for s := range servers {
			resp.ServersInRoom = append(resp.ServersInRoom, s)
		}
		slices.Sort(resp.ServersInRoom)
	}
	return resp, nil
}

func membershipOf(e gomatrixserverlib.PDU) string {
	if e.Type() != spec.MRoomMember {
		return ""
	}
	m, _ := e.Membership()
	return m
}

// performInvite invites a user of another server: the event is built
// here, signed by the invitee's server (invite v2), then input.
func (rf *roomFed) performInvite(ctx context.Context, room storage.Room, inviter, invitee string, content json.RawMessage) (*roomserver.Event, error) {
	uid, err := spec.NewUserID(invitee, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	ev, _, err := rf.rs.BuildTemplate(ctx, gomatrixserverlib.ProtoEvent{
		SenderID: inviter, RoomID: room.RoomID, Type: spec.MRoomMember, StateKey: &invitee, Content: spec.RawJSON(content),
	})
	if err != nil {
		return nil, err
	}
	stripped, err := rf.strippedState(ctx, room)
	if err != nil {
		return nil, err
	}
	req, err := fclient.NewInviteV2Request(ev, stripped)
	if err != nil {
		return nil, err
	}
	resp, err := rf.client.SendInviteV2(ctx, rf.serverName, uid.Domain(), req)
	if err != nil {
		return nil, remoteError(uid.Domain(), err)
	}
	signed, err := parsePDU(resp.Event, gomatrixserverlib.RoomVersion(room.Version))
	if err != nil || signed.EventID() != ev.EventID() {
		return nil, mxerr.Unavailable(fmt.Sprintf("%s returned a different invite event", uid.Domain()))
	}
	if errs := rf.verify(ctx, []gomatrixserverlib.PDU{signed}); errs[0] != nil {
		return nil, mxerr.Unavailable(fmt.Sprintf("%s returned an invite with bad signatures: %v", uid.Domain(), errs[0]))
	}
	res, err := rf.rs.Input(ctx, room.RoomID, []gomatrixserverlib.PDU{signed})
	if err != nil {
		return nil, err
	}
	if res[0].Status != roomserver.InputAccepted && res[0].Status != roomserver.InputDuplicate {
		return nil, mxerr.Forbidden("The invite was not allowed: " + res[0].Reason)
	}
	return rf.rs.Event(ctx, signed.EventID())
}

// strippedStateTypes are the state events an invitee or knocker sees
// (spec: "Stripped state").
var strippedStateTypes = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias,
	"m.room.encryption", spec.MRoomTopic,
}

func (rf *roomFed) strippedState(ctx context.Context, room storage.Room) ([]gomatrixserverlib.InviteStrippedState, error) {
	var out []gomatrixserverlib.InviteStrippedState
	for _, t := range strippedStateTypes {
		e, err := rf.rs.StateEvent(ctx, room, t, "")
		if err != nil {
			return nil, err
		}
		if e != nil {
			out = append(out, gomatrixserverlib.NewInviteStrippedState(e.PDU))
		}
	}
	return out, nil
}

// receiveInvite handles an invite of a local user by another server
// (invite v1 and v2): check, sign, and keep it (in the DAG when this
// server is in the room, out of band otherwise).
func (rf *roomFed) receiveInvite(ctx context.Context, origin spec.ServerName, roomID, eventID string, version gomatrixserverlib.RoomVersion, eventJSON []byte, stripped json.RawMessage, isLocalUser func(ctx context.Context, userID string) (bool, error)) (gomatrixserverlib.PDU, error) {
	if version == "" {
		version = gomatrixserverlib.RoomVersionV1
	}
	if !slices.Contains(supportedVersions(), version) {
		return nil, mxerr.IncompatibleRoomVersion(string(version))
	}
	pdu, err := parsePDU(eventJSON, version)
	if err != nil {
		return nil, mxerr.BadJSON("Invalid event: " + err.Error())
	}
	if pdu.EventID() != eventID || pdu.RoomID().String() != roomID {
		return nil, mxerr.BadJSON("The event does not match the path")
	}
	if membershipOf(pdu) != spec.Invite || pdu.StateKey() == nil {
		return nil, mxerr.BadJSON("The event is not an invite")
	}
	invitee, err := spec.NewUserID(*pdu.StateKey(), true)
	if err != nil || invitee.Domain() != rf.serverName {
		return nil, mxerr.BadJSON("The invitee is not a user of this server")
	}
	sender, err := spec.NewUserID(string(pdu.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		return nil, mxerr.Forbidden("The inviter does not belong to the requesting server")
	}
	if ok, err := isLocalUser(ctx, invitee.String()); err != nil {
		return nil, err
	} else if !ok {
		return nil, mxerr.NotFound("Unknown user " + invitee.String())
	}
	if pdu.Redacted() {
		return nil, mxerr.BadJSON("The event's content hash does not match")
	}
	// An invite must carry the invitee's server's signature too: ours,
	// added first, then all of them are checked.
	verImpl, _ := gomatrixserverlib.GetRoomVersion(version)
	signed := pdu.Sign(string(rf.serverName), rf.key.ID, rf.key.PrivateKey)
	if pdu, err = verImpl.NewEventFromTrustedJSON(signed.JSON(), false); err != nil {
		return nil, err
	}
	if errs := rf.verify(ctx, []gomatrixserverlib.PDU{pdu}); errs[0] != nil {
		return nil, mxerr.Forbidden("The event's signatures are not valid: " + errs[0].Error())
	}
	if room, err := rf.rs.Room(ctx, roomID); err == nil {
		if ext, err := rf.rs.Extremities(ctx, room); err == nil && len(ext) > 0 {
			if m, _ := rf.rs.Membership(ctx, room, invitee.String()); m == spec.Ban || m == spec.Join {
				return nil, mxerr.Forbidden("The user cannot be invited: their membership is " + m)
			}
			// We are in the room: the invite joins the DAG like any event,
			// with any gap before it filled from the inviting server.
			res, err := rf.input(ctx, origin, room, pdu)
			if err != nil {
				return nil, err
			}
			if res.Status == roomserver.InputRejected || res.Status == roomserver.InputSoftFailed {
				return nil, mxerr.Forbidden("The invite is not allowed: " + res.Reason)
			}
			return pdu, nil
		}
	}
	keep := pdu
	if len(stripped) > 0 && string(stripped) != "null" {
		var list []json.RawMessage
		if json.Unmarshal(stripped, &list) == nil {
			// The stripped state travels in unsigned, which signatures do
			// not cover; a copy keeps the returned event clean.
			copyEv, err := verImpl.NewEventFromTrustedJSON(pdu.JSON(), false)
			if err == nil && copyEv.SetUnsignedField("invite_room_state", list) == nil {
				keep = copyEv
			}
		}
	}
	if _, err := rf.rs.StoreOutOfBand(ctx, version, keep); err != nil {
		return nil, err
	}
	return pdu, nil
}

// performLeaveOutOfBand rejects an invite (or withdraws a knock) in a
// room this server is not in: make_leave and send_leave through the
// server that invited, then the leave is kept out of band.
func (rf *roomFed) performLeaveOutOfBand(ctx context.Context, room storage.Room, userID string, servers []spec.ServerName, content map[string]any) error {
	var lastErr error = mxerr.NotFound("No server to leave " + room.RoomID + " through")
	for _, server := range dedupeServers(servers, rf.serverName) {
		made, err := rf.client.MakeLeave(ctx, rf.serverName, server, room.RoomID, userID)
		if err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		version := made.RoomVersion
		if version == "" {
			version = gomatrixserverlib.RoomVersion(room.Version)
		}
		leave, err := rf.buildFromTemplate(made.LeaveEvent, version, room.RoomID, userID, spec.Leave, content)
		if err != nil {
			lastErr = mxerr.Unavailable(fmt.Sprintf("%s sent a bad leave template: %v", server, err))
			continue
		}
		if err := rf.client.SendLeave(ctx, rf.serverName, server, leave); err != nil {
			lastErr = remoteError(server, err)
			continue
		}
		_, err = rf.rs.StoreOutOfBand(ctx, version, leave)
		return err
	}
	return lastErr
}
