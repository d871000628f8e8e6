package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/veche/veche/e2ee"
	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

// End-to-end encryption keys (spec: "End-to-End Encryption" and its
// cross-signing part). The keys themselves are e2ee's business; these
// handlers parse, authenticate and answer.

func (a *API) registerKeysRoutes(rt *httpapi.Router) {
	a.handle(rt, "POST", "/keys/upload", guestOK, a.uploadKeys)
	a.handle(rt, "POST", "/keys/query", guestOK, a.queryKeys)
	a.handle(rt, "POST", "/keys/claim", guestOK, a.claimKeys)
	a.handle(rt, "GET", "/keys/changes", guestOK, a.keyChanges)
	a.handle(rt, "POST", "/keys/device_signing/upload", user, a.uploadSigningKeys)
	a.handle(rt, "POST", "/keys/signatures/upload", user, a.uploadSignatures)
}

// uploadKeys is POST /keys/upload.
func (a *API) uploadKeys(r *http.Request) (any, error) {
	var req e2ee.UploadRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	who := requester(r)
	counts, err := a.keys.Upload(r.Context(), who.UserID, who.DeviceID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// maxKeyTimeout caps how long a client may have us wait for other servers.
const maxKeyTimeout = time.Minute

func keyTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return 0 // the default
	}
	return min(time.Duration(*ms)*time.Millisecond, maxKeyTimeout)
}

// queryKeys is POST /keys/query.
func (a *API) queryKeys(r *http.Request) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, mxerr.MissingParam("device_keys is required")
	}
	return a.keys.Query(r.Context(), requester(r).UserID.String(), req.DeviceKeys, keyTimeout(req.Timeout))
}

// claimKeys is POST /keys/claim.
func (a *API) claimKeys(r *http.Request) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, mxerr.MissingParam("one_time_keys is required")
	}
	return a.keys.Claim(r.Context(), req.OneTimeKeys, keyTimeout(req.Timeout))
}

// keyChanges is GET /keys/changes.
func (a *API) keyChanges(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("from") == "" {
		return nil, mxerr.MissingParam("from is required")
	}
	from, ok := streamPosOfToken(q.Get("from"))
	if !ok {
		return nil, mxerr.InvalidParam("Invalid from token")
	}
	// to is required by the spec but only a hint; without it, up to now.
	to := a.stream.Current()
	if t := q.Get("to"); t != "" {
		if to, ok = streamPosOfToken(t); !ok {
			return nil, mxerr.InvalidParam("Invalid to token")
		}
		to = min(to, a.stream.Current())
	}
	changed, left, err := a.keys.Changes(r.Context(), requester(r).UserID.String(), from, to)
	if err != nil {
		return nil, err
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// streamPosOfToken reads the global stream position of a sync token
// ("s<pos>_<typing>") or a pagination token ("t<depth>_<pos>").
func streamPosOfToken(t string) (int64, bool) {
	var num string
	switch {
	case strings.HasPrefix(t, "s"):
		num, _, _ = strings.Cut(t[1:], "_")
	case strings.HasPrefix(t, "t"):
		_, rest, ok := strings.Cut(t[1:], "_")
		if !ok {
			return 0, false
		}
		num = rest
	default:
		return 0, false
	}
	pos, err := strconv.ParseInt(num, 10, 64)
	return pos, err == nil && pos >= 0
}

// uploadSigningKeys is POST /keys/device_signing/upload. It needs the
// user's password unless the user has no master key yet or uploads the
// keys already stored (spec).
func (a *API) uploadSigningKeys(r *http.Request) (any, error) {
	var req struct {
		e2ee.SigningKeysUpload
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	who := requester(r)
	need, err := a.keys.SigningKeysNeedAuth(r.Context(), who.UserID, req.SigningKeysUpload)
	if err != nil {
		return nil, err
	}
	if need {
		if _, err := a.interactiveAuth(r, req.Auth, uiaRequest{op: "device_signing_upload", flows: [][]string{{stagePassword}}, user: who}); err != nil {
			return nil, err
		}
	}
	if err := a.keys.UploadSigningKeys(r.Context(), who.UserID, req.SigningKeysUpload); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// uploadSignatures is POST /keys/signatures/upload.
func (a *API) uploadSignatures(r *http.Request) (any, error) {
	var req map[string]map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	failures, err := a.keys.UploadSignatures(r.Context(), requester(r).UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}
