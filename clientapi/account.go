package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
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
	// No third-party IDs are bound by Veche, so there is nothing to unbind.
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// threePIDs is GET /account/3pid. Veche does not bind email addresses or
// phone numbers to accounts (m.3pid_changes is off), so the list is empty.
func (a *API) threePIDs(*http.Request) (any, error) {
	return map[string]any{"threepids": []any{}}, nil
}
