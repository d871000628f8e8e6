package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

type createRoomRequest struct {
	Visibility                string                  `json:"visibility"`
	RoomAliasName             string                  `json:"room_alias_name"`
	Name                      string                  `json:"name"`
	Topic                     string                  `json:"topic"`
	Invite                    []string                `json:"invite"`
	Invite3PID                []json.RawMessage       `json:"invite_3pid"`
	RoomVersion               string                  `json:"room_version"`
	CreationContent           json.RawMessage         `json:"creation_content"`
	InitialState              []roomserver.StateEvent `json:"initial_state"`
	Preset                    string                  `json:"preset"`
	IsDirect                  bool                    `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage         `json:"power_level_content_override"`
}

// createRoom is POST /createRoom.
func (a *API) createRoom(r *http.Request) (any, error) {
	var req createRoomRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	me := requester(r)
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, mxerr.InvalidParam("visibility must be public or private")
	}
	if len(req.Invite3PID) > 0 {
		return nil, mxerr.InvalidParam("Third-party invites are not supported")
	}
	if req.Preset == "" {
		req.Preset = roomserver.PresetPrivateChat
		if req.Visibility == "public" {
			req.Preset = roomserver.PresetPublicChat
		}
	}
	for _, obj := range []json.RawMessage{req.CreationContent, req.PowerLevelContentOverride} {
		if len(obj) > 0 && !isJSONObject(obj) {
			return nil, mxerr.BadJSON("creation_content and power_level_content_override must be objects")
		}
	}
	for _, s := range req.InitialState {
		if s.Type == "" || !isJSONObject(s.Content) {
			return nil, mxerr.BadJSON("initial_state events need a type and an object content")
		}
	}
	invitees := map[string]json.RawMessage{}
	for _, u := range req.Invite {
		uid, err := spec.NewUserID(u, true)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid user ID in invite: " + u)
		}
		if uid.Domain() != a.accounts.ServerName() {
			return nil, mxerr.Forbidden("Inviting users on other servers needs federation, which this server does not offer yet")
		}
		profile, err := a.memberProfile(r, u)
		if err != nil {
			return nil, err
		}
		invitees[u] = memberContent(spec.Invite, "", req.IsDirect, profile)
	}
	alias := ""
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + string(a.accounts.ServerName())
		if err := validateAlias(alias); err != nil || strings.ContainsAny(req.RoomAliasName, ":#") {
			return nil, mxerr.InvalidParam("Invalid room_alias_name")
		}
		if _, err := a.db.AliasByName(r.Context(), alias); err == nil {
			return nil, &mxerr.Error{Status: 400, ErrCode: "M_ROOM_IN_USE", Message: "Room alias already taken"}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	profile, err := a.memberProfile(r, me.UserID.String())
	if err != nil {
		return nil, err
	}
	roomID, err := a.rs.CreateRoom(r.Context(), roomserver.CreateRoomRequest{
		Creator: me.UserID.String(), Version: req.RoomVersion, Preset: req.Preset, Name: req.Name, Topic: req.Topic,
		Invite: req.Invite, IsDirect: req.IsDirect, InitialState: req.InitialState, PowerLevels: req.PowerLevelContentOverride,
		CreationContent: req.CreationContent, CanonicalAlias: alias,
		CreatorMember: memberContent(spec.Join, "", false, profile), InviteeMembers: invitees,
	})
	if err != nil {
		return nil, err
	}
	if alias != "" {
		if err := a.db.PutAlias(r.Context(), alias, roomID, me.UserID.String(), a.now().UnixMilli()); err != nil {
			// Taken between the check and now: the room exists either way.
			httpapi.Logger(r.Context()).WithError(err).WithField("alias", alias).Warn("Could not store the new room's alias")
		}
	}
	if req.Visibility == "public" {
		room, err := a.rs.Room(r.Context(), roomID)
		if err != nil {
			return nil, err
		}
		if err := a.db.SetRoomVisibility(r.Context(), room.NID, "public"); err != nil {
			return nil, err
		}
	}
	return map[string]string{"room_id": roomID}, nil
}

func isJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// validateAlias checks the #localpart:server form of a room alias.
func validateAlias(alias string) error {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || server == "" || len(alias) > 255 ||
		strings.ContainsAny(local, " \t\n\x00") {
		return mxerr.InvalidParam("Invalid room alias")
	}
	return nil
}

// memberProfile returns the display name and avatar a local user's member
// events carry.
func (a *API) memberProfile(r *http.Request, userID string) (map[string]any, error) {
	out := map[string]any{}
	localpart, err := a.accounts.LocalpartOf(userID)
	if err != nil {
		return out, nil // a remote user: their server fills this in
	}
	fields, err := a.db.ProfileFields(r.Context(), localpart)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"displayname", "avatar_url"} {
		var s string
		if v, ok := fields[k]; ok && json.Unmarshal(v, &s) == nil && s != "" {
			out[k] = s
		}
	}
	return out, nil
}

// memberContent builds m.room.member content.
func memberContent(membership, reason string, isDirect bool, profile map[string]any) json.RawMessage {
	c := map[string]any{"membership": membership}
	for k, v := range profile {
		c[k] = v
	}
	if reason != "" {
		c["reason"] = reason
	}
	if isDirect {
		c["is_direct"] = true
	}
	raw, _ := json.Marshal(c)
	return raw
}
