package federation

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/e2ee"
)

// Inbound device list and cross-signing EDUs: the remote user's keys
// changed, so the local users sharing a room with them are told to query
// again (e2ee keeps no copy of remote keys).

// useKeys takes the key store from the dependencies, making one when
// there is none (tests that build the component alone).
func (f *Federation) useKeys(d Deps) {
	if d.Keys == nil {
		d.Keys = e2ee.New(e2ee.Deps{DB: d.DB, Stream: d.Stream, ServerName: d.ServerName, Log: d.Log})
	}
	f.e2ee, f.txns.keys = d.Keys, d.Keys
}

// keyUpdates is what inbound key EDUs need of e2ee.Service.
type keyUpdates interface {
	RemoteDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error
	RemoteSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error
}

func (t *transactions) deviceListEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return t.keys.RemoteDeviceListUpdate(ctx, origin, content)
}

func (t *transactions) signingKeyEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return t.keys.RemoteSigningKeyUpdate(ctx, origin, content)
}
