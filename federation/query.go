package federation

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

func (f *Federation) registerQueryRoutes(rt *httpapi.Router) {
	f.handleSigned(rt, "GET /_matrix/federation/v1/query/profile", f.queryProfile)
}

// queryProfile is GET /_matrix/federation/v1/query/profile: a local
// user's whole profile, or only the field asked for.
func (f *Federation) queryProfile(r *http.Request) (any, error) {
	q := r.URL.Query()
	raw := q.Get("user_id")
	if raw == "" {
		return nil, mxerr.MissingParam("user_id is required")
	}
	userID, err := spec.NewUserID(raw, true)
	if err != nil {
		return nil, mxerr.InvalidParam("user_id is not a valid user ID")
	}
	if userID.Domain() != f.serverName {
		return nil, mxerr.InvalidParam("The user is not local to this server")
	}
	u, err := f.db.User(r.Context(), userID.Local())
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated()) {
		return nil, mxerr.NotFound("User does not exist.")
	}
	if err != nil {
		return nil, err
	}
	fields, err := f.db.ProfileFields(r.Context(), userID.Local())
	if err != nil {
		return nil, err
	}
	if field, ok := q["field"]; ok {
		v, ok := fields[field[0]]
		if !ok {
			return nil, mxerr.NotFound("The user has no such profile field.")
		}
		return map[string]json.RawMessage{field[0]: v}, nil
	}
	return fields, nil
}
