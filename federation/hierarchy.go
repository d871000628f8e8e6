package federation

import (
	"context"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
	"github.com/veche/veche/storage"
)

// Spaces (spec: GET /_matrix/federation/v1/hierarchy/{roomId}): a space
// and its direct children, as far as the requesting server could peek
// into or join them. The requesting server walks further levels itself.
// What a room and its children look like is shared with the client API's
// walk, in internal/roomdir.

// hierarchy is GET /_matrix/federation/v1/hierarchy/{roomId}.
func (f *Federation) hierarchy(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	var suggestedOnly bool
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return nil, mxerr.InvalidParam("suggested_only must be true or false")
	}
	ctx := r.Context()
	origin := OriginFrom(ctx)
	notFound := mxerr.NotFound("Room does not exist.")
	room, err := f.rs.Room(ctx, roomID)
	if err != nil {
		return nil, notFound
	}
	root, ok, err := f.describeForServer(ctx, room, origin)
	if err != nil {
		return nil, err
	}
	if !ok {
		// Unknown here, or closed to the requesting server: the spec
		// answers both alike.
		return nil, notFound
	}
	resp := roomdir.HierarchyResponse{
		Room:     roomdir.SpaceRoom{HierarchyRoom: root, ChildrenState: []roomdir.ChildState{}},
		Children: []roomdir.HierarchyRoom{}, InaccessibleChildren: []string{},
	}
	if root.RoomType != roomdir.SpaceRoomType {
		// Spec: the children state of a room that is no space is empty.
		return resp, nil
	}
	children, err := roomdir.SpaceChildren(ctx, f.db, room, suggestedOnly)
	if err != nil {
		return nil, err
	}
	resp.Room.ChildrenState = children
	for _, c := range children {
		if c.StateKey == roomID {
			continue
		}
		child, err := f.rs.Room(ctx, c.StateKey)
		if err != nil {
			// Rooms this server knows nothing about are left out entirely
			// (spec): the requesting server may ask one of the via servers.
			continue
		}
		summary, ok, err := f.describeForServer(ctx, child, origin)
		if err != nil {
			return nil, err
		}
		switch {
		case ok:
			resp.Children = append(resp.Children, summary)
		case summary.RoomID != "":
			// Known and held here, but closed to the requesting server.
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.StateKey)
		}
	}
	return resp, nil
}

// describeForServer summarises a room for another server. The summary's
// RoomID is empty when this server does not hold the room (no local user
// is joined, so its state may be stale or absent). ok reports whether
// that server may see the room, as Synapse decides it: the room is open
// to all (anyone may join or knock, or the history is world-readable),
// or one of its users is joined or invited, or — for restricted rooms —
// joined to one of the rooms the join rule names.
func (f *Federation) describeForServer(ctx context.Context, room storage.Room, origin spec.ServerName) (roomdir.HierarchyRoom, bool, error) {
	d, err := roomdir.DescribeForHierarchy(ctx, f.db, room, f.serverName)
	if err != nil || !d.Held {
		return roomdir.HierarchyRoom{}, false, err
	}
	if err := f.checkACL(ctx, room.RoomID, origin); err != nil {
		// A server the room's ACL denies learns nothing of it.
		return roomdir.HierarchyRoom{Summary: roomdir.Summary{RoomID: room.RoomID}}, false, nil
	}
	out := d.HierarchyRoom
	if out.OpenToAll() {
		return out, true, nil
	}
	for _, m := range d.Members {
		if m.Membership != spec.Join && m.Membership != spec.Invite {
			continue
		}
		if uid, err := spec.NewUserID(m.UserID, true); err == nil && uid.Domain() == origin {
			return out, true, nil
		}
	}
	for _, allowed := range out.AllowedRoomIDs {
		ar, err := f.rs.Room(ctx, allowed)
		if err != nil {
			continue
		}
		servers, err := f.db.JoinedServers(ctx, ar.NID)
		if err != nil {
			return out, false, err
		}
		if slices.Contains(servers, string(origin)) {
			return out, true, nil
		}
	}
	return out, false, nil
}
