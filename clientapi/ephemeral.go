package clientapi

import "github.com/veche/veche/internal/httpapi"

// registerEphemeralRoutes mounts the routes of typing, receipts, read markers, tags and ignored users.
func (a *API) registerEphemeralRoutes(rt *httpapi.Router) {}
