package federation

import (
	"context"
	"fmt"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
)

// Hierarchy asks other servers for a space and its direct children (GET
// /_matrix/federation/v1/hierarchy/{roomId}), for the client API's walk
// of a space tree: the servers are tried in order (this server and those
// the configuration denies are skipped) until one answers about the room
// asked for.
func (f *Federation) Hierarchy(ctx context.Context, roomID string, via []spec.ServerName, suggestedOnly bool) (*roomdir.HierarchyResponse, error) {
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	var lastErr error = mxerr.NotFound("No server to ask about " + roomID)
	tried := map[spec.ServerName]bool{}
	for _, server := range via {
		if server == f.serverName || tried[server] || f.Denied(server) {
			continue
		}
		tried[server] = true
		var resp roomdir.HierarchyResponse
		if err := f.getJSON(ctx, server, path, &resp); err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if resp.Room.RoomID != roomID {
			lastErr = mxerr.Unavailable(fmt.Sprintf("%s answered about %q instead of %s", server, resp.Room.RoomID, roomID))
			continue
		}
		return &resp, nil
	}
	return nil, lastErr
}
