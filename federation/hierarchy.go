package federation

import (
	"context"
	"encoding/json"
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

const spaceChildType = "m.space.child"

// hierarchyChild is a child room of the answer (spec:
// SpaceHierarchyChildRoomsChunk).
type hierarchyChild struct {
	roomdir.Summary
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
}

// hierarchyRoot is the requested room (spec: SpaceHierarchyParentRoom).
type hierarchyRoot struct {
	hierarchyChild
	ChildrenState []childState `json:"children_state"`
}

// childState is an m.space.child event as stripped state with its
// timestamp.
type childState struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS spec.Timestamp  `json:"origin_server_ts"`
}

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
	resp := struct {
		Room                 hierarchyRoot    `json:"room"`
		Children             []hierarchyChild `json:"children"`
		InaccessibleChildren []string         `json:"inaccessible_children"`
	}{Room: hierarchyRoot{hierarchyChild: root, ChildrenState: []childState{}}, Children: []hierarchyChild{}, InaccessibleChildren: []string{}}
	if root.RoomType != "m.space" {
		// Spec: the children state of a room that is no space is empty.
		return resp, nil
	}
	children, err := f.spaceChildren(ctx, room, suggestedOnly)
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

// spaceChildren returns a space's valid m.space.child events (spec: those
// whose via is a non-empty list of server names; the others, such as
// redacted ones, are no children), the suggested ones only if asked,
// ordered by state key for a stable answer.
func (f *Federation) spaceChildren(ctx context.Context, room storage.Room, suggestedOnly bool) ([]childState, error) {
	rows, err := f.db.CurrentStateOfType(ctx, room.NID, spaceChildType)
	if err != nil {
		return nil, err
	}
	events, err := f.rs.EventRows(room, rows)
	if err != nil {
		return nil, err
	}
	var out []childState
	for _, e := range events {
		if e.StateKey() == nil {
			continue
		}
		if _, err := spec.NewRoomID(*e.StateKey()); err != nil {
			continue
		}
		var c struct {
			Via       []json.RawMessage `json:"via"`
			Suggested bool              `json:"suggested"`
		}
		if json.Unmarshal(e.Content(), &c) != nil || len(c.Via) == 0 || !allStrings(c.Via) {
			continue
		}
		if suggestedOnly && !c.Suggested {
			continue
		}
		out = append(out, childState{
			Type: e.Type(), StateKey: *e.StateKey(), Content: json.RawMessage(e.Content()),
			Sender: string(e.SenderID()), OriginServerTS: e.OriginServerTS(),
		})
	}
	slices.SortFunc(out, func(a, b childState) int {
		switch {
		case a.StateKey < b.StateKey:
			return -1
		case a.StateKey > b.StateKey:
			return 1
		}
		return 0
	})
	return out, nil
}

func allStrings(items []json.RawMessage) bool {
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) != nil {
			return false
		}
	}
	return true
}

// describeForServer summarises a room for another server. The summary's
// RoomID is empty when this server does not hold the room (no local user
// is joined, so its state may be stale or absent). ok reports whether
// that server may see the room, as Synapse decides it: the room is open
// to all (anyone may join or knock, or the history is world-readable),
// or one of its users is joined or invited, or — for restricted rooms —
// joined to one of the rooms the join rule names.
func (f *Federation) describeForServer(ctx context.Context, room storage.Room, origin spec.ServerName) (hierarchyChild, bool, error) {
	members, err := f.db.Members(ctx, room.NID)
	if err != nil {
		return hierarchyChild{}, false, err
	}
	var joined int64
	held, originIn := false, false
	for _, m := range members {
		uid, err := spec.NewUserID(m.UserID, true)
		if err != nil {
			continue
		}
		if m.Membership == spec.Join {
			joined++
			if uid.Domain() == f.serverName {
				held = true
			}
		}
		if uid.Domain() == origin && (m.Membership == spec.Join || m.Membership == spec.Invite) {
			originIn = true
		}
	}
	if !held {
		return hierarchyChild{}, false, nil
	}
	if err := f.checkACL(ctx, room.RoomID, origin); err != nil {
		// A server the room's ACL denies learns nothing of it.
		return hierarchyChild{Summary: roomdir.Summary{RoomID: room.RoomID}}, false, nil
	}
	d, err := roomdir.DescribeStored(ctx, f.db, room, joined)
	if err != nil {
		return hierarchyChild{}, false, err
	}
	out := hierarchyChild{Summary: d.Summary, AllowedRoomIDs: d.AllowedRoomIDs, Encryption: d.Encryption, RoomVersion: room.Version}
	if d.OpenToAll() || originIn {
		return out, true, nil
	}
	for _, allowed := range d.AllowedRoomIDs {
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
