package clientapi

import "github.com/veche/veche/internal/httpapi"

// registerDirectoryRoutes mounts the routes of aliases, the room directory and the user directory.
func (a *API) registerDirectoryRoutes(rt *httpapi.Router) {}
