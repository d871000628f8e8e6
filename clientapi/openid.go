package clientapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/veche/veche/internal/mxerr"
)

// openIDTokenLifetime is how long an OpenID token may be exchanged for
// the user's ID (Synapse: one hour).
const openIDTokenLifetime = time.Hour

// openIDTokenPrefix marks OpenID tokens so that leaked ones are
// recognisable, like access tokens.
const openIDTokenPrefix = "voi_"

// requestOpenIDToken is POST /user/{userId}/openid/request_token (spec:
// OpenID). The token proves the user's identity to a third party, which
// exchanges it at the federation endpoint /openid/userinfo; it is good
// for nothing else.
func (a *API) requestOpenIDToken(r *http.Request) (any, error) {
	me := requester(r)
	if r.PathValue("userId") != me.UserID.String() {
		return nil, mxerr.Forbidden("You cannot request OpenID tokens for another user")
	}
	// The body is an empty object, reserved for future expansion.
	var body struct{}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	token := openIDTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	now := a.now()
	if err := a.db.PutOpenIDToken(r.Context(), token, me.UserID.String(), now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": a.accounts.ServerName(),
		"expires_in":         int(openIDTokenLifetime.Seconds()),
	}, nil
}
