package clientapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/clientevent"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// room resolves the {roomId} path value to a stored room.
func (a *API) room(r *http.Request) (storage.Room, error) {
	roomID := r.PathValue("roomId")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return storage.Room{}, mxerr.InvalidParam("Invalid room ID")
	}
	return a.rs.Room(r.Context(), roomID)
}

// roomByIDOrAlias resolves a room ID or a local alias.
func (a *API) roomByIDOrAlias(r *http.Request, idOrAlias string) (storage.Room, error) {
	if strings.HasPrefix(idOrAlias, "#") {
		if err := validateAlias(idOrAlias); err != nil {
			return storage.Room{}, err
		}
		al, err := a.db.AliasByName(r.Context(), idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return storage.Room{}, mxerr.NotFound("Room alias " + idOrAlias + " not found")
		}
		if err != nil {
			return storage.Room{}, err
		}
		idOrAlias = al.RoomID
	}
	if _, err := spec.NewRoomID(idOrAlias); err != nil {
		return storage.Room{}, mxerr.InvalidParam("Invalid room ID or alias")
	}
	return a.rs.Room(r.Context(), idOrAlias)
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// decodeMembershipBody reads the optional body of membership endpoints.
func decodeMembershipBody(r *http.Request) (membershipBody, error) {
	var b membershipBody
	err := decodeOptionalJSON(r, &b)
	if len(b.Reason) > 2048 {
		return b, mxerr.InvalidParam("reason is too long")
	}
	return b, err
}

// joinRoom is POST /rooms/{roomId}/join and POST /join/{roomIdOrAlias}.
func (a *API) joinRoom(r *http.Request) (any, error) {
	body, err := decodeMembershipBody(r)
	if err != nil {
		return nil, err
	}
	target := r.PathValue("roomIdOrAlias")
	if target == "" {
		target = r.PathValue("roomId")
	}
	roomID, servers, err := a.resolveRoom(r, target)
	if err != nil {
		return nil, err
	}
	me := requester(r)
	room, local, err := a.heldRoom(r, roomID)
	if err != nil {
		return nil, err
	}
	if !local {
		// A room this server does not hold: join it through its servers.
		if a.fed == nil || me.IsGuest {
			return nil, mxerr.NotFound("Unknown room " + roomID)
		}
		profile, err := a.memberProfile(r, me.UserID.String())
		if err != nil {
			return nil, err
		}
		if err := a.fed.JoinRoom(r.Context(), me.UserID.String(), roomID, a.joinServers(r, roomID, servers),
			memberContent(spec.Join, body.Reason, false, profile)); err != nil {
			return nil, err
		}
		return map[string]string{"room_id": roomID}, nil
	}
	if me.IsGuest {
		if err := a.checkGuestAccess(r, room); err != nil {
			return nil, err
		}
	}
	profile, err := a.memberProfile(r, me.UserID.String())
	if err != nil {
		return nil, err
	}
	authoriser, err := a.rs.RestrictedJoinAuthoriser(r.Context(), room, me.UserID.String())
	if err != nil {
		return nil, err
	}
	if authoriser != "" {
		profile["join_authorised_via_users_server"] = authoriser
	}
	if _, err := a.rs.ChangeMembership(r.Context(), room.RoomID, roomserver.MembershipChange{
		Sender: me.UserID.String(), Target: me.UserID.String(), Membership: spec.Join,
		Content: memberContent(spec.Join, body.Reason, false, profile),
	}); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": room.RoomID}, nil
}

// upgradeRoom is POST /rooms/{roomId}/upgrade.
func (a *API) upgradeRoom(r *http.Request) (any, error) {
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == "" {
		return nil, mxerr.MissingParam("new_version is required")
	}
	for _, u := range body.AdditionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, mxerr.InvalidParam("additional_creators must be user IDs")
		}
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r).UserID.String()
	if m, err := a.rs.Membership(r.Context(), room, me); err != nil || m != spec.Join {
		if err != nil {
			return nil, err
		}
		return nil, mxerr.Forbidden("You are not in this room")
	}
	profile, err := a.memberProfile(r, me)
	if err != nil {
		return nil, err
	}
	newID, err := a.rs.UpgradeRoom(r.Context(), room, roomserver.UpgradeRequest{
		Sender: me, NewVersion: body.NewVersion, AdditionalCreators: body.AdditionalCreators,
		CreatorMember: memberContent(spec.Join, "", false, profile),
	})
	if err != nil {
		return nil, err
	}
	// Local aliases follow the room.
	aliases, err := a.db.AliasesOfRoom(r.Context(), room.RoomID)
	if err != nil {
		return nil, err
	}
	for _, al := range aliases {
		if err := a.db.DeleteAlias(r.Context(), al); err == nil {
			_ = a.db.PutAlias(r.Context(), al, newID, me, a.now().UnixMilli())
		}
	}
	if room.Visibility == "public" {
		if nr, err := a.rs.Room(r.Context(), newID); err == nil {
			_ = a.db.SetRoomVisibility(r.Context(), nr.NID, "public")
			_ = a.db.SetRoomVisibility(r.Context(), room.NID, "private")
		}
	}
	return map[string]string{"replacement_room": newID}, nil
}

// checkGuestAccess refuses guests unless the room allows them in.
func (a *API) checkGuestAccess(r *http.Request, room storage.Room) error {
	e, err := a.rs.StateEvent(r.Context(), room, "m.room.guest_access", "")
	if err != nil {
		return err
	}
	var c struct {
		GuestAccess string `json:"guest_access"`
	}
	if e == nil || json.Unmarshal(e.Content(), &c) != nil || c.GuestAccess != "can_join" {
		return mxerr.GuestAccessForbidden("Guests cannot join this room")
	}
	return nil
}

// knockRoom is POST /knock/{roomIdOrAlias}.
func (a *API) knockRoom(r *http.Request) (any, error) {
	body, err := decodeMembershipBody(r)
	if err != nil {
		return nil, err
	}
	roomID, servers, err := a.resolveRoom(r, r.PathValue("roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	me := requester(r).UserID.String()
	room, local, err := a.heldRoom(r, roomID)
	if err != nil {
		return nil, err
	}
	if !local {
		// A room this server does not hold: knock through its servers.
		if a.fed == nil {
			return nil, mxerr.NotFound("Unknown room " + roomID)
		}
		profile, err := a.memberProfile(r, me)
		if err != nil {
			return nil, err
		}
		if err := a.fed.Knock(r.Context(), me, roomID, a.joinServers(r, roomID, servers),
			memberContent(spec.Knock, body.Reason, false, profile)); err != nil {
			return nil, err
		}
		return map[string]string{"room_id": roomID}, nil
	}
	if err := a.changeMembershipOf(r, room, me, spec.Knock, body.Reason); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": room.RoomID}, nil
}

// leaveRoom is POST /rooms/{roomId}/leave.
func (a *API) leaveRoom(r *http.Request) (any, error) {
	body, err := decodeMembershipBody(r)
	if err != nil {
		return nil, err
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	if a.fed != nil {
		if in, err := a.inRoom(r.Context(), room); err != nil {
			return nil, err
		} else if !in {
			// An invite or knock of a room this server is not in: the
			// leave goes through the room's servers.
			m, err := a.rs.Membership(r.Context(), room, requester(r).UserID.String())
			if err != nil {
				return nil, err
			}
			if m != spec.Invite && m != spec.Knock {
				return nil, mxerr.Forbidden("You are not in this room")
			}
			return struct{}{}, a.fed.LeaveOutOfBand(r.Context(), room, requester(r).UserID.String(),
				a.joinServers(r, room.RoomID, nil), memberContent(spec.Leave, body.Reason, false, nil))
		}
	}
	return struct{}{}, a.changeMembershipOf(r, room, requester(r).UserID.String(), spec.Leave, body.Reason)
}

// memberAction serves invite, kick, ban and unban: the requester changes
// another user's membership.
func (a *API) memberAction(membership string, unban bool) func(r *http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		body, err := decodeMembershipBody(r)
		if err != nil {
			return nil, err
		}
		if body.UserID == "" {
			return nil, mxerr.MissingParam("user_id is required")
		}
		uid, err := spec.NewUserID(body.UserID, true)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid user_id")
		}
		room, err := a.room(r)
		if err != nil {
			return nil, err
		}
		if membership == spec.Invite && uid.Domain() != a.accounts.ServerName() {
			if a.fed == nil {
				return nil, mxerr.Forbidden("Federation is disabled: users of other servers cannot be invited")
			}
			if m, err := a.rs.Membership(r.Context(), room, body.UserID); err != nil {
				return nil, err
			} else if m == spec.Join || m == spec.Ban {
				return nil, mxerr.Forbidden(body.UserID + " cannot be invited: their membership is " + m)
			}
			return struct{}{}, a.fed.Invite(r.Context(), room, requester(r).UserID.String(), body.UserID,
				memberContent(spec.Invite, body.Reason, false, nil))
		}
		if unban {
			current, err := a.rs.Membership(r.Context(), room, body.UserID)
			if err != nil {
				return nil, err
			}
			if current != spec.Ban {
				return nil, mxerr.Forbidden(body.UserID + " is not banned")
			}
		}
		return struct{}{}, a.changeMembershipOf(r, room, body.UserID, membership, body.Reason)
	}
}

// changeMembershipOf sends the member event for target, with the target's
// profile for joins and invites.
func (a *API) changeMembershipOf(r *http.Request, room storage.Room, target, membership, reason string) error {
	profile := map[string]any{}
	if membership == spec.Join || membership == spec.Invite || membership == spec.Knock {
		var err error
		if profile, err = a.memberProfile(r, target); err != nil {
			return err
		}
	}
	_, err := a.rs.ChangeMembership(r.Context(), room.RoomID, roomserver.MembershipChange{
		Sender: requester(r).UserID.String(), Target: target, Membership: membership,
		Content: memberContent(membership, reason, false, profile),
	})
	return err
}

// forgetRoom is POST /rooms/{roomId}/forget.
func (a *API) forgetRoom(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r).UserID.String()
	m, err := a.rs.Membership(r.Context(), room, me)
	if err != nil {
		return nil, err
	}
	switch m {
	case spec.Join, spec.Invite, spec.Knock:
		return nil, mxerr.Unknown("You must leave the room before forgetting it")
	case "":
		return nil, mxerr.NotFound("You have never been in this room")
	}
	return struct{}{}, a.db.SetForgotten(r.Context(), room.NID, me, true)
}

// joinedRooms is GET /joined_rooms.
func (a *API) joinedRooms(r *http.Request) (any, error) {
	rooms, err := a.db.RoomsOfUser(r.Context(), requester(r).UserID.String(), spec.Join)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(rooms))
	for _, rm := range rooms {
		ids = append(ids, rm.RoomID)
	}
	return map[string]any{"joined_rooms": ids}, nil
}

// roomStateForRequester resolves {roomId} and the snapshot of its state
// the requester may see (see readableState), or refuses.
func (a *API) roomStateForRequester(r *http.Request) (storage.Room, int64, error) {
	room, err := a.room(r)
	if err != nil {
		return room, 0, err
	}
	snap, _, ok, err := a.readableState(r, room)
	if err != nil {
		return room, 0, err
	}
	if !ok {
		return room, 0, mxerr.Forbidden("You are not allowed to see this room's state")
	}
	return room, snap, nil
}

// readableRoom resolves {roomId} for reading its history: the requester
// must be able to read some of it (FilterVisible decides event by event).
func (a *API) readableRoom(r *http.Request) (storage.Room, string, error) {
	room, err := a.room(r)
	if err != nil {
		return room, "", err
	}
	me := requester(r).UserID.String()
	ok, err := a.rs.CanRead(r.Context(), room, me)
	if err != nil {
		return room, me, err
	}
	if !ok {
		return room, me, mxerr.Forbidden("You are not allowed to read this room")
	}
	return room, me, nil
}

// readableState returns the snapshot whose state the requester may see,
// and the last stream position they may see it at: the current state for
// members and world-readable rooms, the state when they left for former
// members. ok is false when they may see none.
func (a *API) readableState(r *http.Request, room storage.Room) (snapshot, upTo int64, ok bool, err error) {
	me := requester(r).UserID.String()
	m, err := a.rs.Membership(r.Context(), room, me)
	if err != nil {
		return 0, 0, false, err
	}
	switch m {
	case spec.Join:
		return room.StateNID, math.MaxInt64, true, nil
	case spec.Leave, spec.Ban:
		ev, err := a.rs.StateEvent(r.Context(), room, spec.MRoomMember, me)
		if err != nil || ev == nil {
			return 0, 0, false, err
		}
		// The state just before they left: what they last saw as members.
		return ev.StateBeforeNID, ev.StreamPos - 1, true, nil
	}
	vis, err := a.rs.Visibility(r.Context(), room)
	if err != nil {
		return 0, 0, false, err
	}
	return room.StateNID, math.MaxInt64, vis == "world_readable", nil
}

// members is GET /rooms/{roomId}/members.
func (a *API) members(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	snap, upTo, ok, err := a.readableState(r, room)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("You are not allowed to see this room's state")
	}
	if at := r.URL.Query().Get("at"); at != "" {
		if snap, err = a.snapshotAtToken(r, room, at, snap, upTo); err != nil {
			return nil, err
		}
	}
	state, err := a.rs.StateAt(r.Context(), room, snap)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	var chunk []*roomserver.Event
	for _, e := range state {
		if e.Type() != spec.MRoomMember {
			continue
		}
		m, _ := e.Membership()
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		chunk = append(chunk, e)
	}
	sortEvents(chunk)
	out, err := a.format.Format(r.Context(), room, chunk, a.formatOptions(r, false))
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": out}, nil
}

// joinedMembers is GET /rooms/{roomId}/joined_members.
func (a *API) joinedMembers(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	m, err := a.rs.Membership(r.Context(), room, requester(r).UserID.String())
	if err != nil {
		return nil, err
	}
	if m != spec.Join {
		if vis, err := a.rs.Visibility(r.Context(), room); err != nil || vis != "world_readable" {
			if err != nil {
				return nil, err
			}
			return nil, mxerr.Forbidden("You are not a member of this room")
		}
	}
	state, err := a.rs.CurrentState(r.Context(), room)
	if err != nil {
		return nil, err
	}
	joined := map[string]any{}
	for _, e := range state {
		if mm, _ := e.Membership(); e.Type() != spec.MRoomMember || mm != spec.Join {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(e.Content(), &c)
		joined[*e.StateKey()] = map[string]any{"display_name": c.DisplayName, "avatar_url": c.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

// formatOptions renders events for the requester.
func (a *API) formatOptions(r *http.Request, omitRoomID bool) clientevent.Options {
	me := requester(r)
	o := clientevent.Options{OmitRoomID: omitRoomID}
	if me != nil {
		o.Localpart, o.DeviceID = me.Localpart(), me.DeviceID
	}
	return o
}
