package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/veche/veche/internal/mxerr"
)

// supportedVersions are the spec versions announced in /versions. Clients
// switch behaviour on these (authenticated media from v1.11, for one), so
// the list grows only as the corresponding features land.
var supportedVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
}

// versions is GET /_matrix/client/versions.
func (a *API) versions(*http.Request) (any, error) {
	return map[string]any{"versions": supportedVersions, "unstable_features": map[string]bool{}}, nil
}

func (a *API) wellKnownClientDoc() map[string]any {
	return map[string]any{"m.homeserver": map[string]string{"base_url": a.baseURL}}
}

// wellKnownClient is GET /.well-known/matrix/client.
func (a *API) wellKnownClient(*http.Request) (any, error) {
	return a.wellKnownClientDoc(), nil
}

// wellKnownServer is GET /.well-known/matrix/server: served only when the
// operator delegates federation to another host and port.
func (a *API) wellKnownServer(*http.Request) (any, error) {
	if a.cfg.WellKnown.Server == "" {
		return nil, mxerr.NotFound("No server delegation is configured")
	}
	return map[string]string{"m.server": a.cfg.WellKnown.Server}, nil
}

// DefaultRoomVersion is the version of rooms created without one (spec:
// servers should default to the latest stable version).
const DefaultRoomVersion = gomatrixserverlib.RoomVersionV12

// capabilities is GET /capabilities.
func (a *API) capabilities(*http.Request) (any, error) {
	available := map[string]string{}
	for _, v := range gomatrixserverlib.StableRoomVersions() {
		available[string(v.Version())] = "stable"
	}
	enabled := map[string]bool{"enabled": true}
	return map[string]any{"capabilities": map[string]any{
		"m.change_password": enabled,
		"m.room_versions":   map[string]any{"default": string(DefaultRoomVersion), "available": available},
		"m.set_displayname": enabled,
		"m.set_avatar_url":  enabled,
		"m.profile_fields":  enabled,
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
	}}, nil
}
