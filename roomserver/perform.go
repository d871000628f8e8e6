package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// StateEvent is a state event to set: type, state key and content.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is a createRoom after the client API parsed it.
type CreateRoomRequest struct {
	Creator         string
	Version         string
	Preset          string
	Name            string
	Topic           string
	Invite          []string
	IsDirect        bool
	InitialState    []StateEvent
	PowerLevels     json.RawMessage // power_level_content_override
	CreationContent json.RawMessage
	// CanonicalAlias is the full alias to set, already reserved.
	CanonicalAlias string
	// CreatorMember and InviteeMembers are the member event contents (the
	// client API fills in display names and avatars from profiles).
	CreatorMember  json.RawMessage
	InviteeMembers map[string]json.RawMessage
}

// Presets (spec: createRoom).
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// CreateRoom creates a room and all its initial events atomically. It
// returns the room ID.
func (rs *Roomserver) CreateRoom(ctx context.Context, req CreateRoomRequest) (string, error) {
	version := req.Version
	if version == "" {
		version = string(DefaultRoomVersion)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil || !verImpl.Stable() {
		return "", &mxerr.Error{Status: 400, ErrCode: "M_UNSUPPORTED_ROOM_VERSION", Message: "Room version " + version + " is not supported"}
	}
	createContent := map[string]any{}
	if len(req.CreationContent) > 0 {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return "", mxerr.BadJSON("creation_content must be an object")
		}
	}
	createContent["room_version"] = version
	if !verImpl.PrivilegedCreators() && roomVersionBefore11(verImpl) {
		createContent["creator"] = req.Creator
	} else {
		delete(createContent, "creator")
	}
	var creators map[string]bool
	if verImpl.PrivilegedCreators() {
		creators = map[string]bool{req.Creator: true}
		if extra, ok := createContent["additional_creators"].([]any); ok {
			for _, u := range extra {
				s, ok := u.(string)
				if _, err := spec.NewUserID(s, true); !ok || err != nil {
					return "", mxerr.InvalidParam("additional_creators must be user IDs")
				}
				creators[s] = true
			}
		}
	}
	builds, err := rs.createRoomEvents(req, verImpl, creators)
	if err != nil {
		return "", err
	}
	for attempt := 0; ; attempt++ {
		create, roomID, err := rs.buildCreateEvent(verImpl, req.Creator, createContent)
		if err != nil {
			return "", err
		}
		_, err = rs.submit(ctx, roomID, &request{create: &createSpec{version: verImpl, event: create}, builds: builds})
		if errors.Is(err, errRoomExists) && attempt < 3 {
			// Same room ID as an existing room (same creator, same
			// millisecond): a later timestamp gives a new ID.
			time.Sleep(time.Millisecond)
			continue
		}
		if errors.Is(err, errRoomExists) {
			return "", mxerr.Unknown("Could not allocate a room ID")
		}
		if err != nil {
			return "", err
		}
		rs.log.WithField("room_id", roomID).WithField("creator", req.Creator).WithField("version", version).Info("Room created")
		return roomID, nil
	}
}

// buildCreateEvent signs the m.room.create event; for room versions whose
// room ID is derived from it (v12), that is where the room ID comes from.
func (rs *Roomserver) buildCreateEvent(verImpl gomatrixserverlib.IRoomVersion, creator string, content map[string]any) (gomatrixserverlib.PDU, string, error) {
	roomID := ""
	if !verImpl.DomainlessRoomIDs() {
		roomID = "!" + accounts.NewSecret()[:18] + ":" + string(rs.serverName)
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, "", err
	}
	empty := ""
	proto := gomatrixserverlib.ProtoEvent{SenderID: creator, RoomID: roomID, Type: spec.MRoomCreate, StateKey: &empty,
		Content: raw, PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(rs.now(), rs.serverName, rs.key.ID, rs.key.PrivateKey)
	if err != nil {
		return nil, "", mxerr.BadJSON(fmt.Sprintf("Invalid create event: %v", err))
	}
	if verImpl.DomainlessRoomIDs() {
		roomID = "!" + ev.EventID()[1:]
	}
	return ev, roomID, nil
}

func stateKey(s string) *string { return &s }

// createRoomEvents lists the events after m.room.create, in the spec's
// order: creator join, power levels, canonical alias, preset rules,
// initial state, name, topic, invites.
func (rs *Roomserver) createRoomEvents(req CreateRoomRequest, verImpl gomatrixserverlib.IRoomVersion, creators map[string]bool) ([]Build, error) {
	c := req.Creator
	var builds []Build
	add := func(typ, key string, content any) error {
		raw, ok := content.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(content); err != nil {
				return err
			}
		}
		builds = append(builds, Build{Sender: c, Type: typ, StateKey: stateKey(key), Content: raw})
		return nil
	}
	member := req.CreatorMember
	if member == nil {
		member = json.RawMessage(`{"membership":"join"}`)
	}
	if err := add(spec.MRoomMember, c, member); err != nil {
		return nil, err
	}

	joinRule, history, guest := spec.Invite, "shared", "can_join"
	switch req.Preset {
	case PresetPublicChat:
		joinRule, guest = spec.Public, "forbidden"
	case PresetPrivateChat, PresetTrustedPrivateChat, "":
	default:
		return nil, mxerr.InvalidParam("Unknown preset " + req.Preset)
	}

	users := map[string]any{}
	if !creators[c] {
		users[c] = 100
	}
	if req.Preset == PresetTrustedPrivateChat {
		for _, u := range req.Invite {
			if !creators[u] {
				users[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if len(req.PowerLevels) > 0 {
		var override map[string]any
		if err := json.Unmarshal(req.PowerLevels, &override); err != nil {
			return nil, mxerr.BadJSON("power_level_content_override must be an object")
		}
		maps.Copy(pl, override)
	}
	if err := add(spec.MRoomPowerLevels, "", pl); err != nil {
		return nil, err
	}
	if req.CanonicalAlias != "" {
		if err := add(spec.MRoomCanonicalAlias, "", map[string]any{"alias": req.CanonicalAlias}); err != nil {
			return nil, err
		}
	}
	initial := map[[2]string]bool{}
	for _, s := range req.InitialState {
		initial[[2]string{s.Type, s.StateKey}] = true
	}
	for _, d := range []struct {
		typ     string
		content map[string]any
	}{
		{spec.MRoomJoinRules, map[string]any{"join_rule": joinRule}},
		{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": history}},
		{"m.room.guest_access", map[string]any{"guest_access": guest}},
	} {
		if !initial[[2]string{d.typ, ""}] {
			if err := add(d.typ, "", d.content); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range req.InitialState {
		if s.Type == spec.MRoomCreate || (s.Type == spec.MRoomMember) {
			return nil, mxerr.InvalidParam("initial_state cannot set " + s.Type)
		}
		if err := add(s.Type, s.StateKey, s.Content); err != nil {
			return nil, err
		}
	}
	if req.Name != "" {
		if err := add(spec.MRoomName, "", map[string]any{"name": req.Name}); err != nil {
			return nil, err
		}
	}
	if req.Topic != "" {
		if err := add(spec.MRoomTopic, "", map[string]any{"topic": req.Topic}); err != nil {
			return nil, err
		}
	}
	for _, u := range req.Invite {
		content := req.InviteeMembers[u]
		if content == nil {
			content = inviteContent(req.IsDirect, "", nil)
		}
		if err := add(spec.MRoomMember, u, content); err != nil {
			return nil, err
		}
	}
	return builds, nil
}

func inviteContent(isDirect bool, reason string, profile map[string]any) json.RawMessage {
	c := map[string]any{"membership": spec.Invite}
	maps.Copy(c, profile)
	if isDirect {
		c["is_direct"] = true
	}
	if reason != "" {
		c["reason"] = reason
	}
	raw, _ := json.Marshal(c)
	return raw
}

// Send builds and commits one event in a room. It returns the event.
func (rs *Roomserver) Send(ctx context.Context, roomID string, b Build) (*Event, error) {
	events, err := rs.submit(ctx, roomID, &request{builds: []Build{b}})
	if err != nil {
		return nil, err
	}
	return events[0], nil
}

// MembershipChange describes a membership event to send: sender changes
// target's membership.
type MembershipChange struct {
	Sender, Target string
	Membership     string
	// Content is the full member event content (the client API adds
	// profile fields and the reason).
	Content json.RawMessage
	Txn     *Txn
}

// ChangeMembership sends a member event after checking that the change
// makes sense in the current state, so that clients get precise errors.
// Joining a room one is already joined to changes nothing and returns nil.
func (rs *Roomserver) ChangeMembership(ctx context.Context, roomID string, mc MembershipChange) (*Event, error) {
	noop := errors.New("no change")
	b := Build{
		Sender: mc.Sender, Type: spec.MRoomMember, StateKey: &mc.Target, Content: mc.Content, Txn: mc.Txn,
		Precheck: func(s StateView) error {
			current := s.Membership(mc.Target)
			self := mc.Sender == mc.Target
			switch mc.Membership {
			case spec.Join:
				if current == spec.Ban {
					return mxerr.Forbidden("You are banned from this room")
				}
				if current == spec.Join && self {
					old := s.Get(spec.MRoomMember, mc.Target)
					if sameProfile(old.Content(), mc.Content) {
						return noop
					}
				}
			case spec.Invite:
				switch current {
				case spec.Join:
					return mxerr.Forbidden(mc.Target + " is already in the room")
				case spec.Ban:
					return mxerr.Forbidden(mc.Target + " is banned from the room")
				}
			case spec.Leave:
				if self && current != spec.Join && current != spec.Invite && current != spec.Knock {
					return mxerr.Forbidden("You are not in this room")
				}
				if !self && current != spec.Join && current != spec.Invite && current != spec.Knock && current != spec.Ban {
					return mxerr.Forbidden(mc.Target + " is not in the room")
				}
			case spec.Knock:
				if current == spec.Join {
					return mxerr.Forbidden("You are already in the room")
				}
				if current == spec.Ban {
					return mxerr.Forbidden("You are banned from this room")
				}
			}
			return nil
		},
	}
	ev, err := rs.Send(ctx, roomID, b)
	if errors.Is(err, noop) {
		return nil, nil
	}
	return ev, err
}

// sameProfile reports whether two member contents carry the same profile,
// so that re-joining with nothing new sends no event.
func sameProfile(a, b []byte) bool {
	var x, y struct {
		Membership  string `json:"membership"`
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && x == y
}

// Redact sends an m.room.redaction of target, refusing when the sender
// may not redact it (spec: the original sender, or the redact level).
func (rs *Roomserver) Redact(ctx context.Context, room storage.Room, sender, target, reason string, txn *Txn) (*Event, error) {
	verImpl, err := roomVersionImpl(room.Version)
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	if !roomVersionBefore11(verImpl) {
		content["redacts"] = target
	}
	raw, _ := json.Marshal(content)
	targetEv, err := rs.Event(ctx, target)
	if err != nil && !errors.Is(err, mxerr.NotFound("")) {
		return nil, err
	}
	if targetEv != nil && targetEv.RoomNID != room.NID {
		return nil, mxerr.NotFound("Event not found in this room")
	}
	return rs.Send(ctx, room.RoomID, Build{
		Sender: sender, Type: "m.room.redaction", Redacts: target, Content: raw, Txn: txn,
		Precheck: func(s StateView) error {
			view := s.(*stateView)
			if targetEv != nil && string(targetEv.SenderID()) == sender {
				return nil
			}
			if powerLevel(view, sender) < redactLevel(view) {
				return mxerr.Forbidden("You may only redact your own events")
			}
			return nil
		},
	})
}
