package roomdir

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// The space hierarchy (spec: Spaces), as both APIs show it: the client
// API's GET /rooms/{roomId}/hierarchy walks it for a user, and the
// federation API's GET /hierarchy/{roomId} answers one level of it for
// another server. What a room looks like in either, and which
// m.space.child events make a room's children, is decided here.

// SpaceChildType is the state event type that names a space's children.
const SpaceChildType = "m.space.child"

// SpaceRoomType is the room type (m.room.create content.type) of a space.
const SpaceRoomType = "m.space"

// HierarchyRoom is a room as the hierarchy shows it (spec: RoomSummary,
// SpaceHierarchyChildRoomsChunk).
type HierarchyRoom struct {
	Summary
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
}

// SpaceRoom is a room with its children (spec: SpaceHierarchyParentRoom,
// SpaceHierarchyRoomsChunk). ChildrenState is empty for a room that is
// no space.
type SpaceRoom struct {
	HierarchyRoom
	ChildrenState []ChildState `json:"children_state"`
}

// ChildState is an m.space.child event as stripped state with its
// timestamp.
type ChildState struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS spec.Timestamp  `json:"origin_server_ts"`
}

// HierarchyResponse is the answer of GET /_matrix/federation/v1/hierarchy.
type HierarchyResponse struct {
	Room                 SpaceRoom       `json:"room"`
	Children             []HierarchyRoom `json:"children"`
	InaccessibleChildren []string        `json:"inaccessible_children"`
}

// childContent is what the hierarchy reads of an m.space.child event.
type childContent struct {
	Via       []json.RawMessage `json:"via"`
	Suggested bool              `json:"suggested"`
	Order     json.RawMessage   `json:"order"`
}

// ChildVia returns the servers of a valid child event's content, and
// whether the child is suggested. ok is false for an event that makes no
// child (spec: via must be a non-empty list of server names; redacted or
// cleared events have none).
func ChildVia(content json.RawMessage) (via []spec.ServerName, suggested, ok bool) {
	var c childContent
	if json.Unmarshal(content, &c) != nil || len(c.Via) == 0 {
		return nil, false, false
	}
	for _, raw := range c.Via {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false, false
		}
		via = append(via, spec.ServerName(s))
	}
	return via, c.Suggested, true
}

// ValidChildren keeps the child events that make children: well-formed
// m.space.child events keyed by a room ID with a valid via (and, if
// suggestedOnly, marked suggested), in the order the spec gives for
// showing them. A remote server's children_state goes through here too.
func ValidChildren(events []ChildState, suggestedOnly bool) []ChildState {
	out := make([]ChildState, 0, len(events))
	for _, e := range events {
		if e.Type != SpaceChildType {
			continue
		}
		if _, err := spec.NewRoomID(e.StateKey); err != nil {
			continue
		}
		_, suggested, ok := ChildVia(e.Content)
		if !ok || (suggestedOnly && !suggested) {
			continue
		}
		out = append(out, e)
	}
	SortChildren(out)
	return out
}

// SortChildren orders a space's children as the spec asks: those with a
// valid order string first, by it; then the rest; ties by the event's
// timestamp, then by room ID.
func SortChildren(children []ChildState) {
	type keyed struct {
		c        ChildState
		order    string
		hasOrder bool
	}
	ks := make([]keyed, len(children))
	for i, c := range children {
		ks[i].c = c
		ks[i].order, ks[i].hasOrder = childOrder(c.Content)
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if a.hasOrder != b.hasOrder {
			if a.hasOrder {
				return -1
			}
			return 1
		}
		if a.hasOrder {
			if c := cmp.Compare(a.order, b.order); c != 0 {
				return c
			}
		}
		if c := cmp.Compare(a.c.OriginServerTS, b.c.OriginServerTS); c != 0 {
			return c
		}
		return cmp.Compare(a.c.StateKey, b.c.StateKey)
	})
	for i := range ks {
		children[i] = ks[i].c
	}
}

// childOrder reads the order key of a child event: valid only as a string
// of at most 50 printable ASCII characters (spec: m.space.child).
func childOrder(content json.RawMessage) (string, bool) {
	var c childContent
	if json.Unmarshal(content, &c) != nil || c.Order == nil {
		return "", false
	}
	var s string
	if json.Unmarshal(c.Order, &s) != nil || len(s) > 50 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return "", false
		}
	}
	return s, true
}

// SpaceChildren returns a stored space's children (see ValidChildren),
// as others see their events: redacted where a redaction applies.
func SpaceChildren(ctx context.Context, db *storage.DB, room storage.Room, suggestedOnly bool) ([]ChildState, error) {
	rows, err := db.CurrentStateOfType(ctx, room.NID, SpaceChildType)
	if err != nil {
		return nil, err
	}
	events := make([]ChildState, 0, len(rows))
	for _, e := range rows {
		if e.StateKey == nil {
			continue
		}
		content, err := json.Marshal(storedContent(e, room.Version))
		if err != nil {
			continue
		}
		events = append(events, ChildState{
			Type: e.Type, StateKey: *e.StateKey, Content: content,
			Sender: e.Sender, OriginServerTS: spec.Timestamp(e.OriginServerTS),
		})
	}
	return ValidChildren(events, suggestedOnly), nil
}

// StoredRoom is what the hierarchy knows of a room stored here.
type StoredRoom struct {
	HierarchyRoom
	// Held reports whether a local user is joined: only then is the
	// stored state current enough to describe the room to anyone.
	// Otherwise the hierarchy asks a server that is in the room.
	Held bool
	// Members are the room's current member events' users and
	// memberships.
	Members []storage.Member
}

// DescribeForHierarchy describes a stored room for the hierarchy; self is
// this server's name. The summary is left empty when the room is not
// held.
func DescribeForHierarchy(ctx context.Context, db *storage.DB, room storage.Room, self spec.ServerName) (StoredRoom, error) {
	members, err := db.Members(ctx, room.NID)
	if err != nil {
		return StoredRoom{}, err
	}
	out := StoredRoom{Members: members}
	var joined int64
	for _, m := range members {
		if m.Membership != spec.Join {
			continue
		}
		joined++
		if uid, err := spec.NewUserID(m.UserID, true); err == nil && uid.Domain() == self {
			out.Held = true
		}
	}
	if !out.Held {
		return out, nil
	}
	d, err := DescribeStored(ctx, db, room, joined)
	if err != nil {
		return StoredRoom{}, err
	}
	out.HierarchyRoom = HierarchyRoom{Summary: d.Summary, AllowedRoomIDs: d.AllowedRoomIDs, Encryption: d.Encryption, RoomVersion: room.Version}
	return out, nil
}
