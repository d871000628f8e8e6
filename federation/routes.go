package federation

import "github.com/veche/veche/internal/httpapi"

// registerRoutes mounts every endpoint. Each spec module lives in its own
// file with its own register function; add new modules here.
func (f *Federation) registerRoutes(rt *httpapi.Router) {
	f.registerVersionRoutes(rt)
	f.registerKeyRoutes(rt)
	f.registerQueryRoutes(rt)
	f.registerRoomRoutes(rt)
	f.registerEventRoutes(rt)
}
