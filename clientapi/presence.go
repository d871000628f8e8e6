package clientapi

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/storage"
)

// registerPresenceRoutes mounts the presence module (guests may use it:
// spec, "Guest access").
func (a *API) registerPresenceRoutes(rt *httpapi.Router) {
	a.handle(rt, "GET", "/presence/{userId}/status", guestOK, a.getPresence)
	a.handle(rt, "PUT", "/presence/{userId}/status", guestOK, a.setPresence)
}

// setPresence is PUT /presence/{userId}/status: only for oneself.
func (a *API) setPresence(r *http.Request) (any, error) {
	me := requester(r).UserID.String()
	if r.PathValue("userId") != me {
		return nil, mxerr.Forbidden("You cannot set another user's presence")
	}
	var body struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, mxerr.MissingParam("presence is required")
	}
	if !presence.ValidState(*body.Presence) {
		return nil, mxerr.InvalidParam("presence must be online, unavailable or offline")
	}
	if body.StatusMsg != nil && len(*body.StatusMsg) > presence.MaxStatusMsgBytes {
		return nil, mxerr.InvalidParam("status_msg is too long")
	}
	if a.presence == nil {
		return struct{}{}, nil
	}
	if err := a.presence.Set(r.Context(), me, *body.Presence, body.StatusMsg); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getPresence is GET /presence/{userId}/status: one's own presence, or
// that of a user sharing a joined room with the requester (spec:
// "Presence information is published to all users who share a room with
// the target user"); 403 for anyone else, 404 for unknown local users.
// Remote users' presence is what their server last said.
func (a *API) getPresence(r *http.Request) (any, error) {
	target := r.PathValue("userId")
	uid, err := spec.NewUserID(target, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	me := requester(r).UserID.String()
	if target != me {
		if uid.Domain() == a.accounts.ServerName() {
			u, err := a.db.User(r.Context(), uid.Local())
			if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated()) {
				return nil, mxerr.NotFound("No such user")
			}
			if err != nil {
				return nil, err
			}
		}
		shares, err := a.db.SharesRoom(r.Context(), me, target)
		if err != nil {
			return nil, err
		}
		if !shares {
			return nil, mxerr.Forbidden("You are not allowed to see their presence")
		}
	}
	if a.presence == nil {
		return presence.Content{Presence: presence.Offline}, nil
	}
	return a.presence.Get(r.Context(), target)
}

// markActive records that the requester did something (spec: sending a
// message is a "pro-active event" for presence). Presence is best
// effort: a failure does not fail the request.
func (a *API) markActive(r *http.Request) {
	if a.presence == nil {
		return
	}
	if err := a.presence.Active(r.Context(), requester(r).UserID.String()); err != nil {
		httpapi.Info(r.Context()).Log.WithError(err).Warn("Recording activity for presence failed")
	}
}
