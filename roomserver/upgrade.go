package roomserver

import (
	"context"
	"encoding/json"
	"maps"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// transferredState is copied into an upgraded room (spec's recommended
// list, plus the room's canonical alias whose aliases move along).
var transferredState = []string{
	"m.room.server_acl", "m.room.encryption", spec.MRoomName, "m.room.avatar", spec.MRoomTopic,
	"m.room.guest_access", spec.MRoomHistoryVisibility, spec.MRoomJoinRules, spec.MRoomCanonicalAlias,
}

// UpgradeRequest is a room upgrade after the client API parsed it.
type UpgradeRequest struct {
	Sender             string
	NewVersion         string
	AdditionalCreators []string
	CreatorMember      json.RawMessage
}

// UpgradeRoom replaces a room with a new one of another version (spec:
// "Room Upgrades") and returns the new room ID. Moving aliases is the
// caller's part, since aliases are the directory's.
func (rs *Roomserver) UpgradeRoom(ctx context.Context, old storage.Room, req UpgradeRequest) (string, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.NewVersion))
	if err != nil || !verImpl.Stable() {
		return "", &mxerr.Error{Status: 400, ErrCode: "M_UNSUPPORTED_ROOM_VERSION", Message: "Room version " + req.NewVersion + " is not supported"}
	}
	pl, err := rs.PowerLevels(ctx, old, old.StateNID)
	if err != nil {
		return "", err
	}
	if !pl.CanSend(req.Sender, "m.room.tombstone", true) {
		return "", mxerr.Forbidden("You may not upgrade this room")
	}
	state, err := rs.CurrentState(ctx, old)
	if err != nil {
		return "", err
	}
	byType := map[string]*Event{}
	for _, e := range state {
		if *e.StateKey() == "" {
			byType[e.Type()] = e
		}
	}
	createContent := map[string]any{"predecessor": map[string]any{"room_id": old.RoomID}}
	if create := byType[spec.MRoomCreate]; create != nil {
		var c map[string]any
		if json.Unmarshal(create.Content(), &c) == nil {
			if t, ok := c["type"]; ok {
				createContent["type"] = t
			}
		}
	}
	if len(req.AdditionalCreators) > 0 {
		if !verImpl.PrivilegedCreators() {
			return "", mxerr.InvalidParam("additional_creators needs a room version with privileged creators")
		}
		createContent["additional_creators"] = req.AdditionalCreators
	}
	creationContent, _ := json.Marshal(createContent)

	var initial []StateEvent
	for _, t := range transferredState {
		if e := byType[t]; e != nil {
			initial = append(initial, StateEvent{Type: t, Content: e.Content()})
		}
	}
	// Power levels carry over, minus creators where the new version
	// makes them privileged (their entry would be refused).
	newPL := map[string]any{}
	if e := byType[spec.MRoomPowerLevels]; e != nil {
		_ = json.Unmarshal(e.Content(), &newPL)
	} else {
		newPL["users"] = map[string]any{req.Sender: 100}
	}
	if verImpl.PrivilegedCreators() {
		if users, ok := newPL["users"].(map[string]any); ok {
			users = maps.Clone(users)
			delete(users, req.Sender)
			for _, c := range req.AdditionalCreators {
				delete(users, c)
			}
			newPL["users"] = users
		}
	} else if users, ok := newPL["users"].(map[string]any); ok {
		// The upgrader must keep enough power to finish setting up.
		users = maps.Clone(users)
		users[req.Sender] = max(toInt(users[req.Sender]), 100)
		newPL["users"] = users
	}
	plRaw, _ := json.Marshal(newPL)

	newID, err := rs.CreateRoom(ctx, CreateRoomRequest{
		Creator: req.Sender, Version: req.NewVersion, Preset: PresetPrivateChat, InitialState: initial,
		PowerLevels: plRaw, CreationContent: creationContent, CreatorMember: req.CreatorMember,
	})
	if err != nil {
		return "", err
	}
	tomb, _ := json.Marshal(map[string]any{"body": "This room has been replaced", "replacement_room": newID})
	empty := ""
	if _, err := rs.Send(ctx, old.RoomID, Build{Sender: req.Sender, Type: "m.room.tombstone", StateKey: &empty, Content: tomb}); err != nil {
		return "", err
	}
	// Quiet the old room: ordinary members can no longer talk or invite.
	if e := byType[spec.MRoomPowerLevels]; e != nil {
		var c map[string]any
		if json.Unmarshal(e.Content(), &c) == nil {
			level := max(50, toInt(c["users_default"])+1)
			c["events_default"], c["invite"] = level, level
			raw, _ := json.Marshal(c)
			if _, err := rs.Send(ctx, old.RoomID, Build{Sender: req.Sender, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: raw}); err != nil {
				rs.log.WithError(err).WithField("room_id", old.RoomID).Warn("Could not restrict the upgraded room's power levels")
			}
		}
	}
	return newID, nil
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case float64:
		return int64(n)
	case json.Number:
		i, _ := n.Int64()
		return i
	}
	return 0
}

// RestrictedJoinAuthoriser returns the local member who vouches for
// userID joining a restricted room (spec: "Restricted rooms"; the join
// event names them in join_authorised_via_users_server), or "" when the
// room is not restricted for this user. It refuses users who are in none
// of the rooms the join rule allows.
func (rs *Roomserver) RestrictedJoinAuthoriser(ctx context.Context, room storage.Room, userID string) (string, error) {
	jr, err := rs.StateEvent(ctx, room, spec.MRoomJoinRules, "")
	if err != nil || jr == nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(jr.Content(), &c) != nil || (c.JoinRule != "restricted" && c.JoinRule != "knock_restricted") {
		return "", nil
	}
	if m, err := rs.Membership(ctx, room, userID); err != nil || m == spec.Join || m == spec.Invite {
		return "", err
	}
	allowed := false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		other, err := rs.db.RoomByID(ctx, a.RoomID)
		if err != nil {
			continue // a room this server does not know cannot vouch
		}
		if m, err := rs.Membership(ctx, other, userID); err == nil && m == spec.Join {
			allowed = true
			break
		}
	}
	if !allowed {
		if c.JoinRule == "knock_restricted" {
			return "", mxerr.Forbidden("You are not in a room that grants access; knock instead")
		}
		return "", mxerr.Forbidden("You are not in a room that grants access to this one")
	}
	pl, err := rs.PowerLevels(ctx, room, room.StateNID)
	if err != nil {
		return "", err
	}
	members, err := rs.db.Members(ctx, room.NID)
	if err != nil {
		return "", err
	}
	for _, m := range members {
		uid, err := spec.NewUserID(m.UserID, true)
		if m.Membership == spec.Join && err == nil && uid.Domain() == rs.serverName && pl.UserLevel(m.UserID) >= pl.Invite {
			return m.UserID, nil
		}
	}
	return "", mxerr.Forbidden("No member of this server may admit you to the room")
}
