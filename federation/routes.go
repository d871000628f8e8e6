package federation

import "github.com/veche/veche/internal/httpapi"

// registerRoutes mounts every endpoint. Each spec module lives in its own
// file with its own registerXRoutes function; add new modules here.
//
// Inside a module: register with f.handleSigned (X-Matrix required; the
// handler reads OriginFrom(ctx) and the signed body through Content(ctx)
// or decodeContent) or f.handlePublic (the few endpoints the spec leaves
// open). Endpoints that touch a room call f.checkACL with the origin
// first, as the spec's Server ACL section lists.
func (f *Federation) registerRoutes(rt *httpapi.Router) {
	f.registerVersionRoutes(rt)
	f.registerKeyRoutes(rt)
	f.registerQueryRoutes(rt)
	f.registerRoomRoutes(rt)
	f.registerServiceRoutes(rt)
	f.registerEventRoutes(rt)
}
