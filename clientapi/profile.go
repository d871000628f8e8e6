package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

const (
	// maxProfileBytes is the spec's cap on a whole profile.
	maxProfileBytes = 64 * 1024
	// maxProfileKeyBytes is the spec's cap on a field name.
	maxProfileKeyBytes = 255
	// maxDisplayNameRunes matches Synapse, so that names that work there
	// work here.
	maxDisplayNameRunes = 256
)

// profileKey is the spec's pattern for profile field names.
var profileKey = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// localProfile returns the profile of a local user, or 404 when the user
// does not exist here (or was deactivated).
func (a *API) localProfile(r *http.Request, userID string) (string, map[string]json.RawMessage, error) {
	localpart, err := a.accounts.LocalpartOf(userID)
	if err != nil {
		if uid, perr := spec.NewUserID(userID, true); perr == nil && uid.Domain() != a.accounts.ServerName() {
			// A remote user: their server has the profile.
			if a.fed == nil {
				return "", nil, mxerr.NotFound("Profile not found")
			}
			fields, err := a.fed.Profile(r.Context(), userID, "")
			return "", fields, err
		}
		return "", nil, mxerr.InvalidParam("Invalid user ID")
	}
	u, err := a.db.User(r.Context(), localpart)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated()) {
		return "", nil, mxerr.NotFound("Profile not found")
	}
	if err != nil {
		return "", nil, err
	}
	fields, err := a.db.ProfileFields(r.Context(), localpart)
	return localpart, fields, err
}

// getProfile is GET /profile/{userId}.
func (a *API) getProfile(r *http.Request) (any, error) {
	_, fields, err := a.localProfile(r, r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return fields, nil
}

// getProfileField is GET /profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request) (any, error) {
	key := r.PathValue("keyName")
	_, fields, err := a.localProfile(r, r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	v, ok := fields[key]
	if !ok {
		return nil, mxerr.NotFound("Profile field not found")
	}
	return map[string]json.RawMessage{key: v}, nil
}

// ownProfileKey checks that the requester edits their own profile and that
// the field name is acceptable.
func (a *API) ownProfileKey(r *http.Request) (localpart, key string, err error) {
	me := requester(r)
	if r.PathValue("userId") != me.UserID.String() {
		return "", "", mxerr.Forbidden("You can only change your own profile")
	}
	key = r.PathValue("keyName")
	if len(key) > maxProfileKeyBytes {
		return "", "", mxerr.KeyTooLarge("Profile field names are limited to 255 bytes")
	}
	if !profileKey.MatchString(key) {
		return "", "", mxerr.InvalidParam("Invalid profile field name")
	}
	return me.Localpart(), key, nil
}

// setProfileField is PUT /profile/{userId}/{keyName}.
func (a *API) setProfileField(r *http.Request) (any, error) {
	localpart, key, err := a.ownProfileKey(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	value, ok := body[key]
	if !ok {
		return nil, mxerr.MissingParam("The body must contain the field " + key)
	}
	if err := validateProfileValue(key, value); err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, value); err != nil {
		return nil, mxerr.BadJSON("Invalid JSON value")
	}
	err = a.db.Transact(r.Context(), func(tx *storage.Tx) error {
		fields, err := tx.ProfileFields(r.Context(), localpart)
		if err != nil {
			return err
		}
		fields[key] = compact.Bytes()
		if whole, _ := json.Marshal(fields); len(whole) > maxProfileBytes {
			return mxerr.ProfileTooLarge("The profile would exceed 64 KiB")
		}
		return tx.SetProfileField(r.Context(), localpart, key, compact.Bytes())
	})
	if err != nil {
		return nil, err
	}
	if key == "displayname" || key == "avatar_url" {
		a.propagateProfile(r, requester(r).UserID.String())
	}
	return struct{}{}, nil
}

// propagateProfile sends an updated member event to every room the user
// is joined to (spec: "Events on Change of Profile Information"), so that
// other members see the new name and avatar. Failures are logged: the
// profile itself is already stored.
func (a *API) propagateProfile(r *http.Request, userID string) {
	rooms, err := a.db.RoomsOfUser(r.Context(), userID, spec.Join)
	if err != nil {
		httpapi.Logger(r.Context()).WithError(err).Warn("Listing rooms for a profile update failed")
		return
	}
	profile, err := a.memberProfile(r, userID)
	if err != nil {
		return
	}
	for _, room := range rooms {
		if _, err := a.rs.ChangeMembership(r.Context(), room.RoomID, roomserver.MembershipChange{
			Sender: userID, Target: userID, Membership: spec.Join, Content: memberContent(spec.Join, "", false, profile),
		}); err != nil {
			httpapi.Logger(r.Context()).WithError(err).WithField("room_id", room.RoomID).Warn("Updating the member event after a profile change failed")
		}
	}
}

// validateProfileValue applies the spec's types to the well-known fields;
// custom fields may hold any JSON.
func validateProfileValue(key string, value json.RawMessage) error {
	var s string
	switch key {
	case "displayname":
		if err := json.Unmarshal(value, &s); err != nil {
			return mxerr.BadJSON("displayname must be a string")
		}
		if len([]rune(s)) > maxDisplayNameRunes {
			return mxerr.InvalidParam("displayname is too long")
		}
	case "avatar_url":
		if err := json.Unmarshal(value, &s); err != nil {
			return mxerr.BadJSON("avatar_url must be a string")
		}
		// "" clears the avatar, as clients send it.
		if s != "" && !validMXC(s) {
			return mxerr.InvalidParam("avatar_url must be an mxc:// URI")
		}
	case "m.tz":
		if err := json.Unmarshal(value, &s); err != nil {
			return mxerr.BadJSON("m.tz must be a string")
		}
	}
	return nil
}

// validMXC checks the mxc://server/media-id form.
func validMXC(s string) bool {
	rest, ok := strings.CutPrefix(s, "mxc://")
	if !ok {
		return false
	}
	server, media, ok := strings.Cut(rest, "/")
	if !ok || server == "" || media == "" || strings.Contains(media, "/") {
		return false
	}
	for _, r := range media {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// deleteProfileField is DELETE /profile/{userId}/{keyName}.
func (a *API) deleteProfileField(r *http.Request) (any, error) {
	localpart, key, err := a.ownProfileKey(r)
	if err != nil {
		return nil, err
	}
	if err := a.db.DeleteProfileField(r.Context(), localpart, key); err != nil {
		return nil, err
	}
	if key == "displayname" || key == "avatar_url" {
		a.propagateProfile(r, requester(r).UserID.String())
	}
	return struct{}{}, nil
}
