package federation

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/e2ee"
	"github.com/veche/veche/internal/mxerr"
)

// What e2ee asks of other servers (e2ee.Remote). The answers are decoded
// with keys left as raw JSON: the library's typed key structs drop
// fields, and a key that lost a field no longer matches its signatures.

// QueryRemoteKeys is POST /_matrix/federation/v1/user/keys/query.
func (f *Federation) QueryRemoteKeys(ctx context.Context, server spec.ServerName, deviceKeys map[string][]string) (e2ee.RemoteKeys, error) {
	var out e2ee.RemoteKeys
	err := f.postJSON(ctx, server, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": deviceKeys}, &out)
	return out, err
}

// ClaimRemoteKeys is POST /_matrix/federation/v1/user/keys/claim.
func (f *Federation) ClaimRemoteKeys(ctx context.Context, server spec.ServerName, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var out struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	err := f.postJSON(ctx, server, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": oneTimeKeys}, &out)
	return out.OneTimeKeys, err
}

// postJSON makes a signed POST request to another server and decodes the
// answer.
func (f *Federation) postJSON(ctx context.Context, dest spec.ServerName, path string, body, out any) error {
	if f.Denied(dest) {
		return mxerr.Forbidden("This server does not federate with " + string(dest))
	}
	return f.requestJSON(ctx, "POST", dest, path, body, out)
}
