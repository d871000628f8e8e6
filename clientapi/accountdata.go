package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// serverManagedAccountData may not be set through the account data API
// (spec: the server manages them through their own endpoints).
var serverManagedAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// accountDataTarget checks that the requester addresses their own account
// data and returns the room ID ("" for global data) and type.
func accountDataTarget(r *http.Request) (roomID, typ string, err error) {
	me := requester(r)
	if r.PathValue("userId") != me.UserID.String() {
		return "", "", mxerr.Forbidden("You cannot access another user's account data")
	}
	if raw := r.PathValue("roomId"); raw != "" {
		if _, err := spec.NewRoomID(raw); err != nil {
			return "", "", mxerr.InvalidParam("Invalid room ID")
		}
		roomID = raw
	}
	typ = r.PathValue("type")
	if typ == "" || len(typ) > 255 {
		return "", "", mxerr.InvalidParam("Invalid account data type")
	}
	return roomID, typ, nil
}

// putAccountData is PUT /user/{userId}/account_data/{type} and its room
// form.
func (a *API) putAccountData(r *http.Request) (any, error) {
	roomID, typ, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if serverManagedAccountData[typ] {
		return nil, &mxerr.Error{Status: http.StatusMethodNotAllowed, ErrCode: "M_BAD_JSON",
			Message: "Cannot set " + typ + " through this API"}
	}
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpapi.UnmarshalObject(body, &obj); err != nil {
		return nil, err
	}
	if typ == "m.ignored_user_list" && roomID == "" {
		if err := validateIgnoredUserList(obj); err != nil {
			return nil, err
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return nil, mxerr.NotJSON("Content not JSON.")
	}
	me := requester(r)
	err = a.stream.Write(1, []string{me.UserID.String()}, func(pos int64) error {
		return a.db.PutAccountData(r.Context(), me.Localpart(), roomID, typ, compact.Bytes(), pos)
	})
	return struct{}{}, err
}

// getAccountData is GET /user/{userId}/account_data/{type} and its room
// form.
func (a *API) getAccountData(r *http.Request) (any, error) {
	roomID, typ, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	content, err := a.db.AccountDataEntry(r.Context(), requester(r).Localpart(), roomID, typ)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Account data not found")
	}
	if err != nil {
		return nil, err
	}
	return &httpapi.Response{Raw: content, ContentType: "application/json"}, nil
}
