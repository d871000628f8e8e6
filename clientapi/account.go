package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
)

// changePassword is POST /account/password. Resetting a forgotten password
// needs a verified email, which Veche does not hold, so the request must
// carry an access token (and the current password through UIA).
func (a *API) changePassword(r *http.Request) (any, error) {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   *string         `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword != nil {
		if err := a.accounts.CheckPasswordPolicy(*req.NewPassword); err != nil {
			return nil, err
		}
	}
	me := requester(r)
	if _, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "change_password", flows: [][]string{{stagePassword}}, user: me}); err != nil {
		return nil, err
	}
	if req.NewPassword == nil {
		return nil, mxerr.MissingParam("new_password is required")
	}
	logoutOthers := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.accounts.SetPassword(r.Context(), me.Localpart(), *req.NewPassword, logoutOthers, me.DeviceID); err != nil {
		return nil, err
	}
	httpapi.Logger(r.Context()).WithField("logout_devices", logoutOthers).Info("Password changed")
	return struct{}{}, nil
}

// deactivate is POST /account/deactivate.
func (a *API) deactivate(r *http.Request) (any, error) {
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	me := requester(r)
	if _, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "deactivate", flows: [][]string{{stagePassword}}, user: me}); err != nil {
		return nil, err
	}
	if err := a.accounts.Deactivate(r.Context(), me.Localpart(), req.Erase); err != nil {
		return nil, err
	}
	a.leaveAllRooms(r, me.UserID.String())
	// No third-party IDs are bound by Veche, so there is nothing to unbind.
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// leaveAllRooms takes a deactivated user out of every room they are in or
// invited to, as a deactivated account must not linger in member lists.
func (a *API) leaveAllRooms(r *http.Request, userID string) {
	rooms, err := a.db.RoomsOfUser(r.Context(), userID, spec.Join, spec.Invite, spec.Knock)
	if err != nil {
		httpapi.Logger(r.Context()).WithError(err).Warn("Listing rooms of a deactivated user failed")
		return
	}
	for _, room := range rooms {
		if _, err := a.rs.ChangeMembership(r.Context(), room.RoomID, roomserver.MembershipChange{
			Sender: userID, Target: userID, Membership: spec.Leave, Content: memberContent(spec.Leave, "", false, nil),
		}); err != nil {
			httpapi.Logger(r.Context()).WithError(err).WithField("room_id", room.RoomID).Warn("Leaving a room after deactivation failed")
		}
	}
}

// threePIDs is GET /account/3pid. Veche does not bind email addresses or
// phone numbers to accounts (m.3pid_changes is off), so the list is empty.
func (a *API) threePIDs(*http.Request) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}
