package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// Room events between servers: transactions, joins, leaves, invites.
func (f *Federation) registerRoomRoutes(rt *httpapi.Router) {
	f.handleSigned(rt, "PUT /_matrix/federation/v1/send/{txnId}", f.send)
	f.handleSigned(rt, "GET /_matrix/federation/v1/make_join/{roomId}/{userId}", f.makeJoin)
	f.handleSigned(rt, "PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}", f.sendJoinV1)
	f.handleSigned(rt, "PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}", f.sendJoinV2)
	f.handleSigned(rt, "GET /_matrix/federation/v1/make_leave/{roomId}/{userId}", f.makeLeave)
	f.handleSigned(rt, "PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}", f.sendLeaveV1)
	f.handleSigned(rt, "PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}", f.sendLeaveV2)
	f.handleSigned(rt, "PUT /_matrix/federation/v1/invite/{roomId}/{eventId}", f.inviteV1)
	f.handleSigned(rt, "PUT /_matrix/federation/v2/invite/{roomId}/{eventId}", f.inviteV2)
	f.handleSigned(rt, "GET /_matrix/federation/v1/query/directory", f.queryDirectory)
}

// roomParam reads {roomId} and applies the room's server ACL to the
// requesting server.
func (f *Federation) roomParam(r *http.Request) (string, error) {
	roomID := r.PathValue("roomId")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", mxerr.InvalidParam("Invalid room ID")
	}
	return roomID, f.checkACL(r.Context(), roomID, OriginFrom(r.Context()))
}

// send is PUT /_matrix/federation/v1/send/{txnId}.
func (f *Federation) send(r *http.Request) (any, error) {
	origin := OriginFrom(r.Context())
	return f.txns.handle(r.Context(), origin, r.PathValue("txnId"), Content(r.Context()))
}

func (f *Federation) makeJoin(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	versions := r.URL.Query()["ver"]
	if versions == nil {
		versions = []string{"1"} // spec: no ver means only v1
	}
	return f.rooms.makeMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("userId"), spec.Join, versions)
}

func (f *Federation) sendJoin(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	room, join, err := f.rooms.receiveMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("eventId"), spec.Join, Content(r.Context()))
	if err != nil {
		return nil, err
	}
	return f.rooms.sendJoinResponse(r.Context(), room, join, r.URL.Query().Get("omit_members") == "true")
}

func (f *Federation) sendJoinV2(r *http.Request) (any, error) { return f.sendJoin(r) }

// sendJoinV1 answers in v1's [200, body] form.
func (f *Federation) sendJoinV1(r *http.Request) (any, error) {
	resp, err := f.sendJoin(r)
	if err != nil {
		return nil, err
	}
	return []any{200, resp}, nil
}

func (f *Federation) makeLeave(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	return f.rooms.makeMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("userId"), spec.Leave, nil)
}

func (f *Federation) sendLeaveV2(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	_, _, err = f.rooms.receiveMembership(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("eventId"), spec.Leave, Content(r.Context()))
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (f *Federation) sendLeaveV1(r *http.Request) (any, error) {
	if _, err := f.sendLeaveV2(r); err != nil {
		return nil, err
	}
	return []any{200, struct{}{}}, nil
}

// inviteV2 is PUT /_matrix/federation/v2/invite/{roomId}/{eventId}.
func (f *Federation) inviteV2(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		Event           json.RawMessage               `json:"event"`
		InviteRoomState json.RawMessage               `json:"invite_room_state"`
	}
	if err := decodeContent(r, &body); err != nil {
		return nil, err
	}
	if len(body.Event) == 0 {
		return nil, mxerr.BadJSON("event is required")
	}
	ev, err := f.rooms.receiveInvite(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("eventId"), body.RoomVersion, body.Event, body.InviteRoomState, f.isLocalUser)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"event": ev.JSON()}, nil
}

// inviteV1 is the older form: the body is the event, stripped state in
// its unsigned, and the room version is 1 or 2.
func (f *Federation) inviteV1(r *http.Request) (any, error) {
	roomID, err := f.roomParam(r)
	if err != nil {
		return nil, err
	}
	content := Content(r.Context())
	var body struct {
		Unsigned struct {
			InviteRoomState json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(content, &body); err != nil {
		return nil, mxerr.NotJSON("The body is not JSON")
	}
	version := gomatrixserverlib.RoomVersionV1
	if room, err := f.rs.Room(r.Context(), roomID); err == nil {
		version = gomatrixserverlib.RoomVersion(room.Version)
	}
	ev, err := f.rooms.receiveInvite(r.Context(), OriginFrom(r.Context()), roomID, r.PathValue("eventId"), version, content, body.Unsigned.InviteRoomState, f.isLocalUser)
	if err != nil {
		return nil, err
	}
	return []any{200, map[string]json.RawMessage{"event": ev.JSON()}}, nil
}

func (f *Federation) isLocalUser(ctx context.Context, userID string) (bool, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != f.serverName {
		return false, nil
	}
	u, err := f.db.User(ctx, uid.Local())
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil && !u.Deactivated(), err
}

// queryDirectory is GET /_matrix/federation/v1/query/directory: a local
// alias's room and the servers in it.
func (f *Federation) queryDirectory(r *http.Request) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, mxerr.MissingParam("room_alias is required")
	}
	al, err := f.db.AliasByName(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Room alias " + alias + " not found")
	}
	if err != nil {
		return nil, err
	}
	servers := []string{string(f.serverName)}
	if room, err := f.rs.Room(r.Context(), al.RoomID); err == nil {
		if joined, err := f.db.JoinedServers(r.Context(), room.NID); err == nil {
			for _, s := range joined {
				if s != string(f.serverName) {
					servers = append(servers, s)
				}
			}
		}
	}
	return map[string]any{"room_id": al.RoomID, "servers": servers}, nil
}
