package clientapi

import "github.com/veche/veche/internal/httpapi"

// registerRelationsRoutes mounts the routes of relations, threads, context and timestamp_to_event.
func (a *API) registerRelationsRoutes(rt *httpapi.Router) {}
