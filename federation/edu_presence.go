package federation

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// presenceEDU applies an m.presence EDU (spec: Server-Server API,
// "Presence"): the presence package checks that each user is of the
// origin server and shares a room with a local user, stores it and wakes
// the local users who share a room with them.
func (t *transactions) presenceEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	if t.presence == nil {
		return nil
	}
	return t.presence.Receive(ctx, origin, content)
}
