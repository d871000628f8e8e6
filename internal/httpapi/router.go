package httpapi

import (
	"net/http"

	"github.com/veche/veche/internal/mxerr"
)

// Router is a ServeMux whose misses are Matrix errors: an unknown path is
// 404 M_UNRECOGNIZED and a known path with the wrong method is 405
// M_UNRECOGNIZED (the standard mux answers both in plain text).
type Router struct {
	mux *http.ServeMux
}

// NewRouter returns an empty router.
func NewRouter() *Router { return &Router{mux: http.NewServeMux()} }

// Handle registers h for a ServeMux pattern such as
// "GET /_matrix/client/v3/account/whoami".
func (rt *Router) Handle(pattern string, h http.Handler) { rt.mux.Handle(pattern, h) }

// ServeHTTP dispatches to the matching route.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		// Through the mux, not h: the mux is what fills in r.Pattern and
		// the path values.
		rt.mux.ServeHTTP(w, r)
		return
	}
	// No route matched. Let the mux's own handler decide between 404, 405
	// and a redirect, and translate its answer.
	probe := &probeWriter{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		if allow := probe.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		mxerr.MethodNotAllowed().Write(w)
		return
	}
	// 404, or a redirect for an unclean path ("//", "/./"), which is no
	// Matrix endpoint either.
	mxerr.Unrecognized("Unrecognized request").Write(w)
}

// probeWriter records what the mux's fallback handler would answer.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *probeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
