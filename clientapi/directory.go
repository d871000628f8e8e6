package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/roomdir"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// registerDirectoryRoutes mounts the routes of aliases, the room directory and the user directory.
func (a *API) registerDirectoryRoutes(rt *httpapi.Router) {
	// Room aliases. Resolving needs no token (spec: no security on GET);
	// guests may not manage aliases (as in Synapse).
	a.handle(rt, "PUT", "/directory/room/{roomAlias}", user, a.putAlias)
	a.handle(rt, "GET", "/directory/room/{roomAlias}", public, a.getAlias)
	a.handle(rt, "DELETE", "/directory/room/{roomAlias}", user, a.deleteAlias)
	a.handle(rt, "GET", "/rooms/{roomId}/aliases", user, a.roomAliases)

	// Published room directory.
	a.handle(rt, "GET", "/directory/list/room/{roomId}", public, a.getDirectoryVisibility)
	a.handle(rt, "PUT", "/directory/list/room/{roomId}", user, a.setDirectoryVisibility)
	a.handle(rt, "GET", "/publicRooms", public, a.publicRoomsGet)
	a.handle(rt, "POST", "/publicRooms", guestOK, a.publicRoomsPost)

	// User directory.
	a.handle(rt, "POST", "/user_directory/search", user, a.searchUserDirectory)
}

// ---- Room aliases ----

// aliasParam reads the {roomAlias} path value and checks its grammar
// (spec appendices: #localpart:server, at most 255 bytes).
func (a *API) aliasParam(r *http.Request) (string, spec.ServerName, error) {
	alias := r.PathValue("roomAlias")
	invalid := mxerr.InvalidParam("Room alias invalid")
	if validateAlias(alias) != nil || !utf8.ValidString(alias) {
		return "", "", invalid
	}
	_, server, _ := strings.Cut(alias, ":")
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return "", "", invalid
	}
	return alias, spec.ServerName(server), nil
}

// putAlias is PUT /directory/room/{roomAlias}.
func (a *API) putAlias(r *http.Request) (any, error) {
	alias, server, err := a.aliasParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		RoomID *string `json:"room_id"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomID == nil {
		return nil, mxerr.BadJSON("room_id is required")
	}
	if server != a.accounts.ServerName() {
		return nil, mxerr.InvalidParam("Room aliases must be on this server, " + string(a.accounts.ServerName()))
	}
	if _, err := spec.NewRoomID(*body.RoomID); err != nil {
		return nil, mxerr.InvalidParam("Invalid room_id")
	}
	room, err := a.rs.Room(r.Context(), *body.RoomID)
	if err != nil {
		return nil, err
	}
	me := requester(r)
	// Synapse's default (require_membership_for_aliases): only members may
	// name a room, so that nobody squats names on rooms they are not in.
	if !me.IsAdmin {
		m, err := a.rs.Membership(r.Context(), room, me.UserID.String())
		if err != nil {
			return nil, err
		}
		if m != spec.Join {
			return nil, mxerr.Forbidden("You must be in the room to create an alias for it")
		}
	}
	err = a.db.PutAlias(r.Context(), alias, room.RoomID, me.UserID.String(), a.now().UnixMilli())
	if errors.Is(err, storage.ErrConflict) {
		return nil, mxerr.Conflict("Room alias " + alias + " already exists")
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getAlias is GET /directory/room/{roomAlias}.
func (a *API) getAlias(r *http.Request) (any, error) {
	alias, server, err := a.aliasParam(r)
	if err != nil {
		return nil, err
	}
	notFound := mxerr.NotFound("Room alias " + alias + " not found")
	if server != a.accounts.ServerName() {
		if a.fed == nil {
			return nil, notFound
		}
		roomID, servers, err := a.fed.ResolveAlias(r.Context(), alias)
		if err != nil {
			return nil, err
		}
		return map[string]any{"room_id": roomID, "servers": servers}, nil
	}
	al, err := a.db.AliasByName(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": al.RoomID, "servers": []string{string(a.accounts.ServerName())}}, nil
}

// deleteAlias is DELETE /directory/room/{roomAlias}. The alias's creator,
// a server admin, or a member who may change the room's canonical alias
// may delete it (as Synapse does; the spec leaves the checks to servers).
func (a *API) deleteAlias(r *http.Request) (any, error) {
	alias, server, err := a.aliasParam(r)
	if err != nil {
		return nil, err
	}
	if server != a.accounts.ServerName() {
		return nil, mxerr.InvalidParam("Room aliases of other servers cannot be deleted here")
	}
	notFound := mxerr.NotFound("Room alias " + alias + " not found")
	al, err := a.db.AliasByName(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	me := requester(r)
	room, err := a.rs.Room(r.Context(), al.RoomID)
	roomKnown := err == nil
	if err != nil && !errors.Is(err, mxerr.NotFound("")) {
		return nil, err
	}
	allowed := al.Creator == me.UserID.String() || me.IsAdmin
	if !allowed && roomKnown {
		if allowed, err = a.mayManageDirectory(r, room); err != nil {
			return nil, err
		}
	}
	if !allowed {
		return nil, mxerr.Forbidden("You don't have permission to delete the alias")
	}
	if err := a.db.DeleteAlias(r.Context(), alias); errors.Is(err, storage.ErrNotFound) {
		return nil, notFound // deleted by someone else meanwhile
	} else if err != nil {
		return nil, err
	}
	if roomKnown {
		a.dropFromCanonicalAlias(r, room.RoomID, alias)
	}
	return struct{}{}, nil
}

// mayManageDirectory reports whether the requester may change how the
// room is named and listed: server admins, and joined members with the
// power to send m.room.canonical_alias (Synapse's rule for both).
func (a *API) mayManageDirectory(r *http.Request, room storage.Room) (bool, error) {
	me := requester(r)
	if me.IsAdmin {
		return true, nil
	}
	m, err := a.rs.Membership(r.Context(), room, me.UserID.String())
	if err != nil || m != spec.Join {
		return false, err
	}
	pl, err := a.rs.PowerLevels(r.Context(), room, room.StateNID)
	if err != nil {
		return false, err
	}
	return pl.CanSend(me.UserID.String(), spec.MRoomCanonicalAlias, true), nil
}

// errCanonicalChanged makes dropFromCanonicalAlias start again when the
// canonical alias event changed between reading and replacing it.
var errCanonicalChanged = errors.New("canonical alias changed meanwhile")

// dropFromCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias, sent as the requester. The spec recommends
// that the deletion succeed even when the requester may not send that
// event, so failures here are only logged.
func (a *API) dropFromCanonicalAlias(r *http.Request, roomID, alias string) {
	ctx := r.Context()
	log := httpapi.Logger(ctx).WithField("room_id", roomID).WithField("alias", alias)
	me := requester(r).UserID.String()
	for range 3 {
		room, err := a.rs.Room(ctx, roomID)
		if err != nil {
			log.WithError(err).Warn("Could not read the room to update its canonical alias")
			return
		}
		cur, err := a.rs.StateEvent(ctx, room, spec.MRoomCanonicalAlias, "")
		if err != nil {
			log.WithError(err).Warn("Could not read the canonical alias")
			return
		}
		if cur == nil {
			return
		}
		content, changed := withoutAlias(cur.Content(), alias)
		if !changed {
			return
		}
		empty := ""
		_, err = a.rs.Send(ctx, roomID, roomserver.Build{
			Sender: me, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: content,
			Precheck: func(s roomserver.StateView) error {
				if now := s.Get(spec.MRoomCanonicalAlias, ""); now == nil || now.EventID() != cur.EventID() {
					return errCanonicalChanged
				}
				return nil
			},
		})
		switch {
		case err == nil:
			return
		case errors.Is(err, errCanonicalChanged):
			continue
		case errors.Is(err, mxerr.Forbidden("")):
			log.WithError(err).Info("Alias deleted; the requester may not update the canonical alias")
			return
		default:
			log.WithError(err).Warn("Alias deleted; updating the canonical alias failed")
			return
		}
	}
}

// withoutAlias returns canonical alias content without alias, as alias
// or among alt_aliases; changed is false when alias was not there.
func withoutAlias(content []byte, alias string) (out json.RawMessage, changed bool) {
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil || c == nil {
		return nil, false
	}
	var main string
	if raw, ok := c["alias"]; ok && json.Unmarshal(raw, &main) == nil && main == alias {
		delete(c, "alias")
		changed = true
	}
	var alts []json.RawMessage
	if raw, ok := c["alt_aliases"]; ok && json.Unmarshal(raw, &alts) == nil {
		kept := make([]json.RawMessage, 0, len(alts))
		for _, al := range alts {
			var s string
			if json.Unmarshal(al, &s) == nil && s == alias {
				continue
			}
			kept = append(kept, al)
		}
		if len(kept) != len(alts) {
			changed = true
			if len(kept) == 0 {
				delete(c, "alt_aliases")
			} else {
				c["alt_aliases"], _ = json.Marshal(kept)
			}
		}
	}
	if !changed {
		return nil, false
	}
	out, _ = json.Marshal(c)
	return out, true
}

// roomAliases is GET /rooms/{roomId}/aliases: for members, anyone when
// the history is world readable, and server admins (spec allows these).
func (a *API) roomAliases(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	me := requester(r)
	if !me.IsAdmin {
		m, err := a.rs.Membership(r.Context(), room, me.UserID.String())
		if err != nil {
			return nil, err
		}
		if m != spec.Join {
			vis, err := a.rs.Visibility(r.Context(), room)
			if err != nil {
				return nil, err
			}
			if vis != roomserver.VisibilityWorldReadable {
				return nil, mxerr.Forbidden("You are not a member of the room")
			}
		}
	}
	aliases, err := a.db.AliasesOfRoom(r.Context(), room.RoomID)
	if err != nil {
		return nil, err
	}
	if aliases == nil {
		aliases = []string{}
	}
	return map[string]any{"aliases": aliases}, nil
}

// ---- Published room directory ----

const (
	visibilityPublic  = "public"
	visibilityPrivate = "private"
)

// getDirectoryVisibility is GET /directory/list/room/{roomId}.
func (a *API) getDirectoryVisibility(r *http.Request) (any, error) {
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	vis := visibilityPrivate
	if room.Visibility == visibilityPublic {
		vis = visibilityPublic
	}
	return map[string]string{"visibility": vis}, nil
}

// setDirectoryVisibility is PUT /directory/list/room/{roomId}.
func (a *API) setDirectoryVisibility(r *http.Request) (any, error) {
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	vis := visibilityPublic // the spec's default
	if body.Visibility != nil {
		vis = *body.Visibility
	}
	if vis != visibilityPublic && vis != visibilityPrivate {
		return nil, mxerr.InvalidParam("visibility must be public or private")
	}
	room, err := a.room(r)
	if err != nil {
		return nil, err
	}
	ok, err := a.mayManageDirectory(r, room)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("Changing a room's directory listing needs the power to change its canonical alias")
	}
	if err := a.db.SetRoomVisibility(r.Context(), room.NID, vis); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// publicRoomsGet is GET /publicRooms.
func (a *API) publicRoomsGet(r *http.Request) (any, error) {
	req, err := roomdir.ParseQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	return a.publicRooms(r, req)
}

// publicRoomsPost is POST /publicRooms.
func (a *API) publicRoomsPost(r *http.Request) (any, error) {
	var req roomdir.Request
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return a.publicRooms(r, req)
}

// publicRooms lists the published room directory of this server, or of
// the server the request names (over federation).
func (a *API) publicRooms(r *http.Request, req roomdir.Request) (any, error) {
	ours := a.accounts.ServerName()
	if server := r.URL.Query().Get("server"); server != "" && spec.ServerName(server) != ours {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
			return nil, mxerr.InvalidParam("Invalid server name")
		}
		if a.fed == nil {
			return nil, errNoFederation
		}
		return a.fed.PublicRooms(r.Context(), spec.ServerName(server), req)
	}
	return roomdir.New(a.db, a.stream).List(r.Context(), req)
}

// contentOf reads the content of an event's JSON, nil when it has none.
func contentOf(js []byte) map[string]json.RawMessage {
	var ev struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	if json.Unmarshal(js, &ev) != nil {
		return nil
	}
	return ev.Content
}

// stringField reads a string field of event content; anything else
// (missing, null, another type) reads as "".
func stringField(content map[string]json.RawMessage, key string) string {
	var s string
	if raw, ok := content[key]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

// ---- User directory ----

const (
	defaultUserDirectoryLimit = 10
	maxUserDirectoryLimit     = 100
)

// userDirectoryResult is one user of a search answer.
type userDirectoryResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	rank        int
}

// searchUserDirectory is POST /user_directory/search. It searches the
// users the spec says the requester may find (and Synapse searches with
// search_all_users off): those sharing a room with the requester and
// those joined to rooms with a public join rule or world-readable
// history. Deactivated accounts are never found.
func (a *API) searchUserDirectory(r *http.Request) (any, error) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.SearchTerm == nil {
		return nil, mxerr.BadJSON("search_term is required")
	}
	limit := defaultUserDirectoryLimit
	if body.Limit != nil {
		if *body.Limit < 0 {
			return nil, mxerr.InvalidParam("limit must not be negative")
		}
		limit = min(*body.Limit, maxUserDirectoryLimit)
	}
	term := strings.ToLower(strings.TrimSpace(*body.SearchTerm))
	if term == "" {
		return map[string]any{"results": []userDirectoryResult{}, "limited": false}, nil
	}
	users, err := a.visibleUsers(r)
	if err != nil {
		return nil, err
	}
	ours := a.accounts.ServerName()
	var localparts []string
	for _, u := range users {
		if u.Domain() == ours {
			localparts = append(localparts, u.Local())
		}
	}
	profiles, err := a.db.DirectoryProfiles(r.Context(), localparts)
	if err != nil {
		return nil, err
	}
	var results []userDirectoryResult
	for _, u := range users {
		var p storage.DirectoryProfile
		if u.Domain() == ours {
			var ok bool
			if p, ok = profiles[u.Local()]; !ok {
				continue // deactivated, or no such account
			}
		}
		rank, ok := userMatch(term, u, p.DisplayName)
		if !ok {
			continue
		}
		results = append(results, userDirectoryResult{UserID: u.String(), DisplayName: p.DisplayName, AvatarURL: p.AvatarURL, rank: rank})
	}
	// Spec: by rank, then whether profile information is available.
	sort.Slice(results, func(i, j int) bool {
		x, y := results[i], results[j]
		if x.rank != y.rank {
			return x.rank < y.rank
		}
		if (x.DisplayName != "") != (y.DisplayName != "") {
			return x.DisplayName != ""
		}
		return x.UserID < y.UserID
	})
	limited := len(results) > limit
	if limited {
		results = results[:limit]
	}
	if results == nil {
		results = []userDirectoryResult{}
	}
	return map[string]any{"results": results, "limited": limited}, nil
}

// visibleUsers lists the users joined to a room the requester is joined
// to or to a room open to everyone (public join rule or world-readable
// history).
func (a *API) visibleUsers(r *http.Request) ([]spec.UserID, error) {
	ctx := r.Context()
	mine, err := a.db.RoomsOfUser(ctx, requester(r).UserID.String(), spec.Join)
	if err != nil {
		return nil, err
	}
	rooms := map[int64]bool{}
	for _, rm := range mine {
		rooms[rm.RoomNID] = true
	}
	open, err := a.db.MaybeOpenRooms(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range open {
		// Redaction keeps join_rule and history_visibility, so the
		// stored content is the effective one.
		c := contentOf(e.JSON)
		if stringField(c, "join_rule") == spec.Public || stringField(c, "history_visibility") == roomserver.VisibilityWorldReadable {
			rooms[e.RoomNID] = true
		}
	}
	nids := make([]int64, 0, len(rooms))
	for nid := range rooms {
		nids = append(nids, nid)
	}
	ids, err := a.db.JoinedUsersOfRooms(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]spec.UserID, 0, len(ids))
	for _, id := range ids {
		if u, err := spec.NewUserID(id, true); err == nil {
			out = append(out, *u)
		}
	}
	return out, nil
}

// userMatch ranks how well a user matches a lower-cased search term, on
// the localpart and display name, or on the whole user ID when the term
// is typed as one ("@ali"): 0 for an exact match, 1 for a prefix, 2 for
// the start of a word of the display name, 3 for any substring.
func userMatch(term string, u spec.UserID, displayName string) (int, bool) {
	local := strings.ToLower(u.Local())
	name := strings.ToLower(displayName)
	full := strings.ToLower(u.String())
	switch {
	case local == term || name == term || full == term:
		return 0, true
	case strings.HasPrefix(local, term) || (name != "" && strings.HasPrefix(name, term)) || strings.HasPrefix(full, term):
		return 1, true
	case strings.Contains(name, " "+term):
		return 2, true
	case strings.Contains(local, term) || strings.Contains(name, term):
		return 3, true
	}
	return 0, false
}
