package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

// Shared-secret registration, compatible with Synapse's
// /_synapse/admin/v1/register so that register_new_matrix_user and other
// provisioning tools work against Veche unchanged.

const nonceLifetime = time.Minute

type nonceStore struct {
	now func() time.Time

	mu     sync.Mutex
	nonces map[string]time.Time // nonce → expiry
}

func newNonceStore(now func() time.Time) *nonceStore {
	return &nonceStore{now: now, nonces: map[string]time.Time{}}
}

func (n *nonceStore) issue() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	for k, exp := range n.nonces {
		if now.After(exp) {
			delete(n.nonces, k)
		}
	}
	nonce := accounts.NewSecret()
	n.nonces[nonce] = now.Add(nonceLifetime)
	return nonce
}

// consume reports whether nonce was issued and is unexpired; either way it
// cannot be used again.
func (n *nonceStore) consume(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.nonces[nonce]
	delete(n.nonces, nonce)
	return ok && !n.now().After(exp)
}

func (a *API) sharedSecretEnabled() error {
	if a.cfg.Registration.SharedSecret == "" {
		return mxerr.Unknown("Shared secret registration is not enabled")
	}
	return nil
}

// adminRegisterNonce is GET /_synapse/admin/v1/register.
func (a *API) adminRegisterNonce(r *http.Request) (any, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	if err := limit(a.limits.register, a.clientIP(r)); err != nil {
		return nil, err
	}
	return map[string]string{"nonce": a.nonces.issue()}, nil
}

// adminRegister is POST /_synapse/admin/v1/register.
func (a *API) adminRegister(r *http.Request) (any, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return nil, err
	}
	var req struct {
		Nonce       string `json:"nonce"`
		Username    string `json:"username"`
		Password    string `json:"password"`
		Admin       bool   `json:"admin"`
		UserType    string `json:"user_type"`
		DisplayName string `json:"displayname"`
		MAC         string `json:"mac"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if !a.nonces.consume(req.Nonce) {
		return nil, mxerr.Unknown("Unrecognised nonce")
	}
	if req.Username == "" || len(req.Username) > 512 || strings.ContainsRune(req.Username, 0) {
		return nil, mxerr.InvalidParam("Invalid username")
	}
	if req.Password == "" || len(req.Password) > 512 || strings.ContainsRune(req.Password, 0) {
		return nil, mxerr.InvalidParam("Invalid password")
	}
	if req.UserType != "" && req.UserType != "support" && req.UserType != "bot" {
		return nil, mxerr.InvalidParam("Invalid user type")
	}
	want := sharedSecretMAC(a.cfg.Registration.SharedSecret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType)
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return nil, mxerr.Forbidden("HMAC incorrect")
	}
	localpart := strings.ToLower(req.Username)
	if err := accounts.ValidateLocalpart(localpart, string(a.accounts.ServerName())); err != nil {
		return nil, mxerr.InvalidUsername(strings.TrimPrefix(err.Error(), accounts.ErrInvalidLocalpart.Error()+": "))
	}
	s, err := a.accounts.Create(r.Context(), accounts.NewAccount{
		Localpart: localpart, Password: req.Password, Admin: req.Admin, UserType: req.UserType, DisplayName: req.DisplayName,
	}, &accounts.LoginOptions{})
	if err != nil {
		return nil, err
	}
	httpapi.Logger(r.Context()).WithField("new_user", s.UserID.String()).WithField("admin", req.Admin).Info("User registered with the shared secret")
	return map[string]string{
		"access_token": s.AccessToken, "user_id": s.UserID.String(), "home_server": string(a.accounts.ServerName()), "device_id": s.DeviceID,
	}, nil
}

// sharedSecretMAC is Synapse's HMAC-SHA1 over the NUL-separated fields.
func sharedSecretMAC(secret, nonce, username, password string, admin bool, userType string) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	parts := []string{nonce, username, password, role}
	if userType != "" {
		parts = append(parts, userType)
	}
	m.Write([]byte(strings.Join(parts, "\x00")))
	return m.Sum(nil)
}
