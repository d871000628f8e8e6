package clientapi

import (
	"net/http"
	"strings"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

// loginFlows is GET /login.
func (a *API) loginFlows(*http.Request) (any, error) {
	return map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}}, nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"` // deprecated
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

type loginResponse struct {
	registerResponse
	WellKnown map[string]any `json:"well_known"`
}

// login is POST /login with m.login.password.
func (a *API) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := limit(a.limits.login, a.clientIP(r)); err != nil {
		return nil, err
	}
	if req.Type != "m.login.password" {
		return nil, mxerr.Unknown("Unknown login type")
	}
	localpart, err := a.identifiedLocalpart(req.Identifier, req.User)
	if err != nil {
		return nil, err
	}
	if err := a.checkPasswordLimited(r, localpart, req.Password); err != nil {
		return nil, err
	}
	s, err := a.accounts.Login(r.Context(), localpart, accounts.LoginOptions{
		DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, Refresh: req.RefreshToken,
	})
	if err != nil {
		return nil, err
	}
	httpapi.Logger(r.Context()).WithField("user_id", s.UserID.String()).WithField("device_id", s.DeviceID).Info("User logged in")
	return &loginResponse{
		registerResponse: *a.sessionResponse(s),
		WellKnown:        a.wellKnownClientDoc(),
	}, nil
}

// identifiedLocalpart resolves a user identifier (or the deprecated "user"
// field) to a localpart on this server. User IDs are matched without
// regard to case, as users type them.
func (a *API) identifiedLocalpart(id *userIdentifier, legacyUser string) (string, error) {
	user := legacyUser
	if id != nil {
		switch id.Type {
		case "m.id.user":
			user = id.User
		case "m.id.thirdparty", "m.id.phone":
			// Veche stores no third-party IDs, so none can match (spec:
			// an unknown 3PID gets 403).
			return "", mxerr.Forbidden("No account is bound to this third-party identifier")
		default:
			return "", mxerr.Unknown("Unknown identifier type")
		}
	}
	if user == "" {
		return "", mxerr.MissingParam("A user identifier is required")
	}
	user = strings.ToLower(user)
	if strings.HasPrefix(user, "@") {
		lp, err := a.accounts.LocalpartOf(user)
		if err != nil {
			return "", mxerr.Forbidden("Invalid username or password")
		}
		return lp, nil
	}
	return user, nil
}

// refresh is POST /refresh.
func (a *API) refresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxerr.MissingParam("refresh_token is required")
	}
	if err := limit(a.limits.login, a.clientIP(r)); err != nil {
		return nil, err
	}
	s, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token": s.AccessToken, "refresh_token": s.RefreshToken, "expires_in_ms": s.ExpiresIn.Milliseconds(),
	}, nil
}

// logout is POST /logout: the device and its tokens go.
func (a *API) logout(r *http.Request) (any, error) {
	return struct{}{}, a.accounts.Logout(r.Context(), requester(r))
}

// logoutAll is POST /logout/all.
func (a *API) logoutAll(r *http.Request) (any, error) {
	return struct{}{}, a.accounts.LogoutAll(r.Context(), requester(r).Localpart())
}

// whoami is GET /account/whoami.
func (a *API) whoami(r *http.Request) (any, error) {
	req := requester(r)
	return map[string]any{"user_id": req.UserID.String(), "device_id": req.DeviceID, "is_guest": req.IsGuest}, nil
}
