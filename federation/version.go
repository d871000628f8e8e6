package federation

import (
	"net/http"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/version"
)

func (f *Federation) registerVersionRoutes(rt *httpapi.Router) {
	f.handlePublic(rt, "GET /_matrix/federation/v1/version", f.version)
}

// version is GET /_matrix/federation/v1/version.
func (f *Federation) version(*http.Request) (any, error) {
	return map[string]any{"server": map[string]string{"name": "Veche", "version": version.Version}}, nil
}
