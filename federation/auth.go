package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/matrix-org/util"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

// handleSigned registers an endpoint that only servers may call: the
// request must carry a valid X-Matrix signature (spec: Request
// Authentication). The handler reads the origin with OriginFrom and the
// body with Content (or from r.Body, which is refilled).
func (f *Federation) handleSigned(rt *httpapi.Router, pattern string, h httpapi.Handler) {
	rt.Handle(pattern, httpapi.Serve(func(r *http.Request) (any, error) {
		r, err := f.authenticate(r)
		if err != nil {
			return nil, err
		}
		return h(r)
	}))
}

// handlePublic registers an endpoint the spec leaves unauthenticated
// (version, the key API, OpenID userinfo).
func (f *Federation) handlePublic(rt *httpapi.Router, pattern string, h httpapi.Handler) {
	rt.Handle(pattern, httpapi.Serve(h))
}

type originKey struct{}
type contentKey struct{}

// OriginFrom returns the verified origin server of an authenticated
// federation request ("" outside one).
func OriginFrom(ctx context.Context) spec.ServerName {
	o, _ := ctx.Value(originKey{}).(spec.ServerName)
	return o
}

// Content returns the body of an authenticated federation request, as it
// was signed (nil when it had none).
func Content(ctx context.Context) []byte {
	b, _ := ctx.Value(contentKey{}).([]byte)
	return b
}

// decodeContent reads an authenticated request's JSON object body into v
// (M_NOT_JSON / M_BAD_JSON as the client API answers them).
func decodeContent(r *http.Request, v any) error {
	return httpapi.UnmarshalObject(Content(r.Context()), v)
}

// authenticate checks the X-Matrix Authorization header of r and returns r
// with the origin and body in its context. Checks that need no key come
// first, so that a request from a denied or misdirected server never makes
// this server fetch anything.
func (f *Federation) authenticate(r *http.Request) (*http.Request, error) {
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var origin, destination spec.ServerName
	var params []xMatrix
	for _, h := range r.Header.Values("Authorization") {
		p, isXMatrix, err := parseXMatrix(h)
		if !isXMatrix {
			continue
		}
		if err != nil {
			return nil, mxerr.Unauthorized("Malformed X-Matrix Authorization header: " + err.Error())
		}
		if len(params) > 0 && p.origin != origin {
			return nil, mxerr.Unauthorized("X-Matrix Authorization headers name different origins")
		}
		origin, destination = p.origin, p.destination
		params = append(params, p)
	}
	if len(params) == 0 {
		return nil, mxerr.Unauthorized("Missing X-Matrix Authorization header")
	}
	if _, _, ok := spec.ParseAndValidateServerName(origin); !ok {
		return nil, mxerr.Unauthorized("The origin is not a valid server name")
	}
	// Spec: a destination that is not this server must be refused with 401.
	if destination != "" && destination != f.serverName {
		return nil, mxerr.Unauthorized("The request is addressed to " + string(destination) + ", not to this server")
	}
	if f.Denied(origin) {
		return nil, mxerr.Forbidden("Federation with this server is not allowed")
	}
	if len(body) > 0 && (!json.Valid(body) || !utf8.Valid(body)) {
		return nil, mxerr.NotJSON("Content not JSON.")
	}

	r.Body = io.NopCloser(bytes.NewReader(body))
	// The spec does not require a Content-Type, the library does; headers
	// are not signed, and the body was checked above.
	r.Header.Set("Content-Type", "application/json")
	// The library's own header parser is stricter than the spec (exact
	// case, no escapes, no spaces): hand it the parsed values in the form
	// it reads.
	r.Header.Del("Authorization")
	for _, p := range params {
		r.Header.Add("Authorization", p.canonical())
	}
	fr, errResp := fclient.VerifyHTTPRequest(r, f.now(), f.serverName, nil, f.keyRing)
	if fr == nil {
		var m struct {
			Message string `json:"message"`
		}
		if b, err := json.Marshal(errResp.JSON); err == nil {
			_ = json.Unmarshal(b, &m)
		}
		if m.Message == "" {
			m.Message = "Invalid X-Matrix signature"
		}
		switch {
		case errResp.Code >= 500:
			return nil, mxerr.Unavailable("Could not check the request signature")
		case errResp.Code == http.StatusBadRequest:
			e := mxerr.Unauthorized(m.Message)
			e.Status = http.StatusBadRequest
			return nil, e
		default:
			return nil, mxerr.Unauthorized(m.Message)
		}
	}
	if ok, wait := f.limiter.Allow(string(origin)); !ok {
		return nil, mxerr.LimitExceeded(wait)
	}

	if f.OnInbound != nil {
		// The origin is evidently up: deliver what we owe it now.
		f.OnInbound(origin)
	}
	ctx := context.WithValue(r.Context(), originKey{}, origin)
	ctx = context.WithValue(ctx, contentKey{}, fr.Content())
	info := httpapi.Info(ctx)
	info.Log = info.Log.WithField("origin", origin)
	r = r.WithContext(util.ContextWithLogger(ctx, entryOf(info.Log)))
	r.Body = io.NopCloser(bytes.NewReader(body))
	return r, nil
}

// xMatrix holds the parameters of one X-Matrix Authorization header.
type xMatrix struct {
	origin, destination spec.ServerName
	key, sig            string
}

func (p xMatrix) canonical() string {
	return `X-Matrix origin="` + string(p.origin) + `",destination="` + string(p.destination) + `",key="` + p.key + `",sig="` + p.sig + `"`
}

// parseXMatrix reads an Authorization header as the spec describes it
// (RFC 9110 auth-params: case-insensitive names in any order, quoted or
// token values, backslash escapes, optional whitespace around commas, and
// unquoted colons tolerated). isXMatrix is false for other schemes.
func parseXMatrix(h string) (p xMatrix, isXMatrix bool, err error) {
	scheme, rest, _ := strings.Cut(strings.TrimLeft(h, " "), " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return p, false, nil
	}
	seen := map[string]string{}
	for rest = strings.TrimLeft(rest, " \t"); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return p, true, errors.New("expected name=value")
		}
		name := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var value string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return p, true, errors.New("unterminated quoted value")
			}
			value, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			value, rest = strings.TrimRight(rest[:end], " \t"), rest[end:]
		}
		seen[name] = value
		rest = strings.TrimLeft(rest, " \t")
		if rest != "" {
			if rest[0] != ',' {
				return p, true, errors.New("expected a comma between parameters")
			}
			rest = strings.TrimLeft(rest[1:], " \t")
		}
	}
	p = xMatrix{origin: spec.ServerName(seen["origin"]), destination: spec.ServerName(seen["destination"]), key: seen["key"], sig: seen["sig"]}
	if p.origin == "" || p.key == "" || p.sig == "" {
		return p, true, errors.New("origin, key and sig are required")
	}
	for _, v := range []string{string(p.origin), string(p.destination), p.key, p.sig} {
		if strings.ContainsAny(v, "\"\\,") {
			return p, true, errors.New("unexpected characters in a parameter")
		}
	}
	return p, true, nil
}

// withLibraryLogger hands the request's logger to gomatrixserverlib, which
// otherwise logs through logrus's global logger (util.GetLogger).
func withLibraryLogger(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := util.ContextWithLogger(r.Context(), entryOf(httpapi.Logger(r.Context())))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func entryOf(l logrus.FieldLogger) *logrus.Entry {
	if e, ok := l.(*logrus.Entry); ok {
		return e
	}
	return l.WithFields(nil)
}
