package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 *string         `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

type registerResponse struct {
	UserID       string `json:"user_id"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	HomeServer   string `json:"home_server"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

// register is POST /register (spec: "Account registration").
func (a *API) register(r *http.Request) (any, error) {
	kind := r.URL.Query().Get("kind")
	switch kind {
	case "", "user":
	case "guest":
		return a.registerGuest(r)
	default:
		return nil, mxerr.InvalidParam("kind must be user or guest")
	}
	if !a.cfg.Registration.Enabled {
		return nil, mxerr.Forbidden("Registration is disabled")
	}
	var req registerRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := limit(a.limits.register, a.clientIP(r)); err != nil {
		return nil, err
	}
	if result := a.uia.finishedResult(req.Auth, "register"); result != nil {
		return result, nil
	}
	// Checks that can fail are made before auth (spec), so that nobody
	// completes auth only to learn the name was taken.
	localpart := ""
	if req.Username != nil {
		var err error
		if localpart, err = a.checkUsernameAvailable(r, *req.Username); err != nil {
			return nil, err
		}
	}
	if req.Password != nil {
		if err := a.accounts.CheckPasswordPolicy(*req.Password); err != nil {
			return nil, err
		}
	}
	flows := [][]string{{stageDummy}}
	if a.cfg.Registration.Token != "" {
		flows = [][]string{{stageRegistrationToken}}
	}
	sess, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "register", flows: flows})
	if err != nil {
		return nil, err
	}
	if req.Password == nil || *req.Password == "" {
		return nil, mxerr.MissingParam("password is required")
	}
	if localpart == "" {
		localpart = "user" + strings.ToLower(accounts.NewSecret()[:10])
	}
	var login *accounts.LoginOptions
	if !req.InhibitLogin {
		login = &accounts.LoginOptions{DisplayName: req.InitialDeviceDisplayName, Refresh: req.RefreshToken}
		if req.DeviceID != nil {
			login.DeviceID = *req.DeviceID
		}
	}
	s, err := a.accounts.Create(r.Context(), accounts.NewAccount{Localpart: localpart, Password: *req.Password}, login)
	if err != nil {
		return nil, err
	}
	resp := a.sessionResponse(s)
	a.uia.setResult(sess, resp)
	return resp, nil
}

func (a *API) sessionResponse(s *accounts.Session) *registerResponse {
	return &registerResponse{
		UserID: s.UserID.String(), AccessToken: s.AccessToken, DeviceID: s.DeviceID, HomeServer: string(a.accounts.ServerName()),
		RefreshToken: s.RefreshToken, ExpiresInMS: s.ExpiresIn.Milliseconds(),
	}
}

// registerGuest creates a guest account (spec: "Guest access"). Everything
// in the body but the device display name is ignored.
func (a *API) registerGuest(r *http.Request) (any, error) {
	if !a.cfg.Registration.AllowGuests {
		return nil, mxerr.GuestAccessForbidden("Guest access is disabled")
	}
	var req registerRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := limit(a.limits.register, a.clientIP(r)); err != nil {
		return nil, err
	}
	s, err := a.accounts.Create(r.Context(), accounts.NewAccount{Guest: true},
		&accounts.LoginOptions{DisplayName: req.InitialDeviceDisplayName})
	if err != nil {
		return nil, err
	}
	return a.sessionResponse(s), nil
}

// checkUsernameAvailable turns a requested username into a localpart and
// applies the grammar, the reserved names and the existing accounts to it.
// Like Synapse, it lower-cases the name: clients let users type "Alice".
func (a *API) checkUsernameAvailable(r *http.Request, username string) (string, error) {
	localpart := strings.ToLower(strings.TrimPrefix(username, "@"))
	if strings.Contains(localpart, ":") {
		// A full user ID: only ours can be registered here.
		lp, err := a.accounts.LocalpartOf("@" + localpart)
		if err != nil {
			return "", mxerr.InvalidUsername("Username must be a localpart or a user ID on this server")
		}
		localpart = lp
	}
	if err := accounts.ValidateLocalpart(localpart, string(a.accounts.ServerName())); err != nil {
		return "", mxerr.InvalidUsername(strings.TrimPrefix(err.Error(), accounts.ErrInvalidLocalpart.Error()+": "))
	}
	if isNumeric(localpart) {
		return "", mxerr.InvalidUsername("Numeric user IDs are reserved for guest users")
	}
	if strings.HasPrefix(localpart, "_") {
		return "", mxerr.InvalidUsername("User IDs starting with '_' are reserved for bridges")
	}
	if slices.Contains(a.cfg.Registration.ReservedLocalparts, localpart) {
		return "", mxerr.InvalidUsername("This user ID is reserved")
	}
	taken, err := a.db.UserExists(r.Context(), localpart)
	if err != nil {
		return "", err
	}
	if taken {
		return "", mxerr.UserInUse("User ID already taken")
	}
	return localpart, nil
}

func isNumeric(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// registerAvailable is GET /register/available.
func (a *API) registerAvailable(r *http.Request) (any, error) {
	if !a.cfg.Registration.Enabled {
		return nil, mxerr.Forbidden("Registration is disabled")
	}
	if err := limit(a.limits.usernameCheck, a.clientIP(r)); err != nil {
		return nil, err
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return nil, mxerr.MissingParam("username is required")
	}
	if _, err := a.checkUsernameAvailable(r, username); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// registrationTokenValidity is GET /v1/register/m.login.registration_token/validity.
func (a *API) registrationTokenValidity(r *http.Request) (any, error) {
	if !a.cfg.Registration.Enabled || a.cfg.Registration.Token == "" {
		return nil, mxerr.Forbidden("Registration tokens are not in use on this server")
	}
	if err := limit(a.limits.usernameCheck, a.clientIP(r)); err != nil {
		return nil, err
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, mxerr.MissingParam("token is required")
	}
	err := a.attemptStage(r, authDict{Type: stageRegistrationToken, Token: token}, uiaRequest{})
	if err != nil && !errors.Is(err, mxerr.Unauthorized("")) {
		return nil, err
	}
	return map[string]bool{"valid": err == nil}, nil
}
