package federation

import (
	"errors"
	"net/http"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// openIDUserInfo is GET /_matrix/federation/v1/openid/userinfo: a third
// party (not necessarily a Matrix server, so the request is not signed)
// exchanges an OpenID token a local user requested for the user's ID.
func (f *Federation) openIDUserInfo(r *http.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, mxerr.MissingToken("Access token required") // as Synapse answers
	}
	userID, err := f.db.OpenIDTokenOwner(r.Context(), token, f.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.UnknownToken("Access token unknown or expired", false)
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"sub": userID}, nil
}
