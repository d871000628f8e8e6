package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/veche/veche/internal/filter"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// createFilter is POST /user/{userId}/filter.
func (a *API) createFilter(r *http.Request) (any, error) {
	me := requester(r)
	if r.PathValue("userId") != me.UserID.String() {
		return nil, mxerr.Forbidden("You can only create filters for yourself")
	}
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpapi.UnmarshalObject(body, &obj); err != nil {
		return nil, err
	}
	f, err := filter.Parse(body)
	if err != nil {
		return nil, mxerr.BadJSON(err.Error())
	}
	// Stored re-encoded: known fields only, in a stable form, so that the
	// same filter sent twice gets the same ID.
	canonical, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	id, err := a.db.PutFilter(r.Context(), me.Localpart(), canonical)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": strconv.FormatInt(id, 10)}, nil
}

// getFilter is GET /user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request) (any, error) {
	me := requester(r)
	if r.PathValue("userId") != me.UserID.String() {
		return nil, mxerr.Forbidden("You can only read your own filters")
	}
	id, err := strconv.ParseInt(r.PathValue("filterId"), 10, 64)
	if err != nil || id < 0 {
		return nil, mxerr.NotFound("No such filter")
	}
	f, err := a.db.Filter(r.Context(), me.Localpart(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("No such filter")
	}
	if err != nil {
		return nil, err
	}
	return &httpapi.Response{Raw: f, ContentType: "application/json"}, nil
}
