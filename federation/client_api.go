package federation

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// What the client API asks of other servers (clientapi.Federation).

// JoinRoom joins a local user to a room held by other servers.
func (f *Federation) JoinRoom(ctx context.Context, userID, roomID string, servers []spec.ServerName, content json.RawMessage) error {
	c, err := contentMap(content)
	if err != nil {
		return err
	}
	var allowed []spec.ServerName
	for _, s := range servers {
		if !f.Denied(s) {
			allowed = append(allowed, s)
		}
	}
	return f.rooms.performJoin(ctx, userID, roomID, allowed, c)
}

// Invite invites a user of another server.
func (f *Federation) Invite(ctx context.Context, room storage.Room, inviter, invitee string, content json.RawMessage) error {
	uid, err := spec.NewUserID(invitee, true)
	if err != nil {
		return mxerr.InvalidParam("Invalid user ID")
	}
	if f.Denied(uid.Domain()) {
		return mxerr.Forbidden("This server does not federate with " + string(uid.Domain()))
	}
	_, err = f.rooms.performInvite(ctx, room, inviter, invitee, content)
	return err
}

// LeaveOutOfBand rejects an invite of a room this server is not in.
func (f *Federation) LeaveOutOfBand(ctx context.Context, room storage.Room, userID string, servers []spec.ServerName, content json.RawMessage) error {
	c, err := contentMap(content)
	if err != nil {
		return err
	}
	return f.rooms.performLeaveOutOfBand(ctx, room, userID, servers, c)
}

// ResolveAlias asks an alias's server for its room.
func (f *Federation) ResolveAlias(ctx context.Context, alias string) (string, []spec.ServerName, error) {
	i := strings.IndexByte(alias, ':')
	if i < 0 {
		return "", nil, mxerr.InvalidParam("Invalid room alias")
	}
	server := spec.ServerName(alias[i+1:])
	if f.Denied(server) {
		return "", nil, mxerr.NotFound("Room alias " + alias + " not found")
	}
	resp, err := f.client.LookupRoomAlias(ctx, f.serverName, server, alias)
	if err != nil {
		return "", nil, remoteError(server, err)
	}
	if _, err := spec.NewRoomID(resp.RoomID); err != nil {
		return "", nil, mxerr.NotFound("Room alias " + alias + " not found")
	}
	return resp.RoomID, resp.Servers, nil
}

// Profile asks a remote user's server for their profile.
func (f *Federation) Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if f.Denied(uid.Domain()) {
		return nil, mxerr.NotFound("Profile not found")
	}
	path := "/_matrix/federation/v1/query/profile?user_id=" + urlQueryEscape(userID)
	if field != "" {
		path += "&field=" + urlQueryEscape(field)
	}
	var out map[string]json.RawMessage
	if err := f.getJSON(ctx, uid.Domain(), path, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func contentMap(raw json.RawMessage) (map[string]any, error) {
	c := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, mxerr.BadJSON("Invalid member content")
		}
	}
	return c, nil
}

// getJSON makes a signed GET request to another server and decodes the
// answer.
func (f *Federation) getJSON(ctx context.Context, dest spec.ServerName, pathAndQuery string, out any) error {
	return f.requestJSON(ctx, "GET", dest, pathAndQuery, nil, out)
}

// requestJSON makes a signed request to another server, with body (nil
// for none) as its JSON content, and decodes the answer into out.
func (f *Federation) requestJSON(ctx context.Context, method string, dest spec.ServerName, pathAndQuery string, body, out any) error {
	req := fclient.NewFederationRequest(method, f.serverName, dest, pathAndQuery)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return err
		}
	}
	if err := req.Sign(f.serverName, f.key.ID, f.key.PrivateKey); err != nil {
		return err
	}
	httpReq, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	if err := f.client.DoRequestAndParseResponse(ctx, httpReq, out); err != nil {
		return remoteError(dest, err)
	}
	return nil
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
