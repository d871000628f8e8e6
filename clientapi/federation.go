package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
	"github.com/veche/veche/storage"
)

// Federation is what the client API asks of other servers. It is nil
// when federation is off: remote users, rooms and aliases are then
// unknown.
type Federation interface {
	// JoinRoom joins a local user to a room held by other servers,
	// trying the servers in order.
	JoinRoom(ctx context.Context, userID, roomID string, servers []spec.ServerName, content json.RawMessage) error
	// Invite invites a user of another server to a room this server is in.
	Invite(ctx context.Context, room storage.Room, inviter, invitee string, content json.RawMessage) error
	// LeaveOutOfBand rejects an invite (or withdraws a knock) of a room
	// this server is not in.
	LeaveOutOfBand(ctx context.Context, room storage.Room, userID string, servers []spec.ServerName, content json.RawMessage) error
	// ResolveAlias asks the alias's server for its room.
	ResolveAlias(ctx context.Context, alias string) (roomID string, servers []spec.ServerName, err error)
	// Profile asks a remote user's server for their profile (one field,
	// or all when field is "").
	Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// Knock knocks on a room held by other servers, trying the servers in
	// order, and keeps the knock (with the room's stripped state) out of
	// band.
	Knock(ctx context.Context, userID, roomID string, servers []spec.ServerName, content json.RawMessage) error
	// PublicRooms asks another server for a page of its room directory.
	PublicRooms(ctx context.Context, server spec.ServerName, req roomdir.Request) (json.RawMessage, error)
	// Backfill fetches history of a room this server is in from the
	// other servers in it: up to limit events before the given prev
	// events, which this server lacks. ctx bounds the time it may take.
	Backfill(ctx context.Context, room storage.Room, from []string, limit int) error
	// Hierarchy asks other servers, trying via in order, for a space and
	// its direct children as this server may see them.
	Hierarchy(ctx context.Context, roomID string, via []spec.ServerName, suggestedOnly bool) (*roomdir.HierarchyResponse, error)
}

// errNoFederation answers requests that would need other servers when
// federation is off.
var errNoFederation = mxerr.NotFound("Federation is disabled on this server")

// inRoom reports whether this server holds the room's history (some
// local user is or was joined), as opposed to knowing of it only through
// an invite or a knock.
func (a *API) inRoom(ctx context.Context, room storage.Room) (bool, error) {
	ext, err := a.rs.Extremities(ctx, room)
	return len(ext) > 0, err
}

// heldRoom loads a room a membership request names and reports whether
// the change can be built here (see joinLocally); an unknown room is not
// an error, it is one to reach through other servers.
func (a *API) heldRoom(r *http.Request, roomID string) (storage.Room, bool, error) {
	room, err := a.rs.Room(r.Context(), roomID)
	if errors.Is(err, mxerr.NotFound("")) {
		return room, false, nil
	}
	if err != nil {
		return room, false, err
	}
	local, err := a.joinLocally(r.Context(), room)
	return room, local, err
}

// joinLocally reports whether a join can be built on this server's view
// of the room: it holds the room's history and either a local user is
// still joined (so the view is current) or no other server is.
// Otherwise the view may be stale — everyone here left and events went
// on elsewhere — and the join goes through a resident server, as a
// first join would.
func (a *API) joinLocally(ctx context.Context, room storage.Room) (bool, error) {
	in, err := a.inRoom(ctx, room)
	if err != nil || !in || a.fed == nil {
		return in, err
	}
	servers, err := a.db.JoinedServers(ctx, room.NID)
	if err != nil {
		return false, err
	}
	for _, s := range servers {
		if spec.ServerName(s) == a.accounts.ServerName() {
			return true, nil
		}
	}
	return len(servers) == 0, nil
}

// joinServers lists the servers to try for joining a remote room: those
// the client named, those the alias lookup gave, the server of whoever
// invited us, and the room ID's own server.
func (a *API) joinServers(r *http.Request, roomID string, given []spec.ServerName) []spec.ServerName {
	out := append([]spec.ServerName{}, given...)
	q := r.URL.Query()
	for _, s := range append(q["via"], q["server_name"]...) {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s)); ok {
			out = append(out, spec.ServerName(s))
		}
	}
	if room, err := a.rs.Room(r.Context(), roomID); err == nil {
		if joined, err := a.db.JoinedServers(r.Context(), room.NID); err == nil {
			for _, s := range joined {
				out = append(out, spec.ServerName(s))
			}
		}
		if ev, err := a.rs.StateEvent(r.Context(), room, spec.MRoomMember, requester(r).UserID.String()); err == nil && ev != nil {
			if uid, err := spec.NewUserID(string(ev.SenderID()), true); err == nil {
				out = append(out, uid.Domain())
			}
			out = append(out, strippedStateServers(ev.Unsigned())...)
		}
	}
	if i := strings.IndexByte(roomID, ':'); i > 0 {
		out = append(out, spec.ServerName(roomID[i+1:]))
	}
	return out
}

// resolveRoom turns a room ID or alias (local or remote) into a room ID
// and the servers the alias lookup suggests.
func (a *API) resolveRoom(r *http.Request, idOrAlias string) (string, []spec.ServerName, error) {
	if !strings.HasPrefix(idOrAlias, "#") {
		if _, err := spec.NewRoomID(idOrAlias); err != nil {
			return "", nil, mxerr.InvalidParam("Invalid room ID or alias")
		}
		return idOrAlias, nil, nil
	}
	if err := validateAlias(idOrAlias); err != nil {
		return "", nil, err
	}
	if aliasServer(idOrAlias) == a.accounts.ServerName() {
		room, err := a.roomByIDOrAlias(r, idOrAlias)
		return room.RoomID, nil, err
	}
	if a.fed == nil {
		return "", nil, mxerr.NotFound("Room alias " + idOrAlias + " not found")
	}
	return a.fed.ResolveAlias(r.Context(), idOrAlias)
}

// strippedStateServers lists the servers of the senders of the stripped
// state an invite or knock kept out of band carries: they are in the room,
// which a leave (withdrawing the knock) must go through. The knocker is
// its own knock's sender, and a room ID of version 12 names no server.
func strippedStateServers(unsigned []byte) []spec.ServerName {
	var u struct {
		Invite []struct {
			Sender string `json:"sender"`
		} `json:"invite_room_state"`
		Knock []struct {
			Sender string `json:"sender"`
		} `json:"knock_room_state"`
	}
	if json.Unmarshal(unsigned, &u) != nil {
		return nil
	}
	var out []spec.ServerName
	for _, e := range append(u.Invite, u.Knock...) {
		if uid, err := spec.NewUserID(e.Sender, true); err == nil {
			out = append(out, uid.Domain())
		}
	}
	return out
}

func aliasServer(alias string) spec.ServerName {
	if i := strings.IndexByte(alias, ':'); i > 0 {
		return spec.ServerName(alias[i+1:])
	}
	return ""
}
