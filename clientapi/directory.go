package clientapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
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

const (
	// defaultPublicRoomsLimit applies when a client names no limit (Synapse
	// would send everything; a page keeps answers bounded).
	defaultPublicRoomsLimit = 100
	maxPublicRoomsLimit     = 500
	// maxDirectorySnapshotAge is how many stream positions a pagination
	// token's snapshot may lie behind: each page undoes the membership
	// changes since the snapshot, which must stay cheap.
	maxDirectorySnapshotAge = 50_000
)

// publicRoomsRequest is the body of POST /publicRooms; GET takes the same
// values from the query string.
type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// publicRoomsGet is GET /publicRooms.
func (a *API) publicRoomsGet(r *http.Request) (any, error) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, mxerr.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	switch q.Get("include_all_networks") {
	case "", "false":
	case "true":
		req.IncludeAllNetworks = true
	default:
		return nil, mxerr.InvalidParam("include_all_networks must be true or false")
	}
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	return a.publicRooms(r, req)
}

// publicRoomsPost is POST /publicRooms.
func (a *API) publicRoomsPost(r *http.Request) (any, error) {
	var req publicRoomsRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return a.publicRooms(r, req)
}

// publicRoomChunk is one room of the directory (spec: PublishedRoomsChunk).
type publicRoomChunk struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int64  `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// directoryKey is a room's place in the directory's order: most joined
// members first, then by room ID. The count is the one at the listing's
// snapshot, not the current one (see directoryToken).
type directoryKey struct {
	Count  int64
	RoomID string
}

func (k directoryKey) before(o directoryKey) bool {
	return k.Count > o.Count || (k.Count == o.Count && k.RoomID < o.RoomID)
}

// directoryToken is a next_batch or prev_batch token: the snapshot (At)
// and the key of the room at the page's edge (Count, RoomID).
//
// Paging on the last key seen alone would skip or repeat rooms whose
// member counts change between two requests, since a room's key is its
// count. So every page of one listing orders the rooms by their counts at
// one stream position, the snapshot, taken when the first page was asked
// for: the order is then fixed for the whole listing, and taking the rooms
// strictly after the token's key (forwards) or strictly before it
// (backwards) can neither skip nor repeat a room. The counts shown stay
// the current ones, so a later page may show a larger count than an
// earlier one.
//
// Trade-offs: a room published after the snapshot appears only if its key
// falls on a page not yet read; an unpublished one disappears. A token
// older than maxDirectorySnapshotAge positions is re-anchored on the
// current state, where the guarantee lapses (a room may then be skipped or
// repeated once). Counts at the snapshot assume linear room histories
// (see storage.PublishedRooms). Tokens are not signed: a forged one only
// chooses another starting point, and its snapshot is clamped to the
// permitted window, which bounds the work it can cause.
type directoryToken struct {
	Back   bool   `json:"b,omitempty"`
	At     int64  `json:"s"`
	Count  int64  `json:"c"`
	RoomID string `json:"r"`
}

func (t directoryToken) String() string {
	raw, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseDirectoryToken(s string) (directoryToken, error) {
	var t directoryToken
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(raw, &t) != nil || t.RoomID == "" || t.At < 0 {
		return t, mxerr.InvalidParam("Invalid pagination token")
	}
	return t, nil
}

// directoryStateTypes are the state events a directory entry shows.
var directoryStateTypes = []string{
	spec.MRoomCreate, spec.MRoomName, spec.MRoomTopic, spec.MRoomCanonicalAlias, spec.MRoomAvatar,
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess,
}

// publicRooms lists the published room directory.
func (a *API) publicRooms(r *http.Request, req publicRoomsRequest) (any, error) {
	ours := a.accounts.ServerName()
	if server := r.URL.Query().Get("server"); server != "" && spec.ServerName(server) != ours {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
			return nil, mxerr.InvalidParam("Invalid server name")
		}
		return nil, mxerr.NotFound("Room directories of other servers need federation, which this server does not offer yet")
	}
	limit := defaultPublicRoomsLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, mxerr.InvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, maxPublicRoomsLimit)
		}
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return nil, mxerr.InvalidParam("include_all_networks cannot be combined with third_party_instance_id")
	}
	var tok *directoryToken
	if req.Since != "" {
		t, err := parseDirectoryToken(req.Since)
		if err != nil {
			return nil, err
		}
		tok = &t
	}
	if req.ThirdPartyInstanceID != "" {
		// No application service publishes rooms to a network here.
		return map[string]any{"chunk": []publicRoomChunk{}, "total_room_count_estimate": 0}, nil
	}

	// Positions up to Current are all committed, so the state there is
	// complete and stays the same for every later page.
	at := a.stream.Current()
	if tok != nil && tok.At <= at && tok.At >= at-maxDirectorySnapshotAge {
		at = tok.At
	}
	rooms, err := a.db.PublishedRooms(r.Context(), at)
	if err != nil {
		return nil, err
	}
	entries, err := a.directoryEntries(r, rooms)
	if err != nil {
		return nil, err
	}
	entries = filterEntries(entries, req)
	sort.Slice(entries, func(i, j int) bool { return entries[i].key.before(entries[j].key) })

	n := len(entries)
	start, end := 0, min(limit, n)
	if tok != nil {
		k := directoryKey{Count: tok.Count, RoomID: tok.RoomID}
		if tok.Back {
			end = sort.Search(n, func(i int) bool { return !entries[i].key.before(k) })
			start = max(0, end-limit)
		} else {
			start = sort.Search(n, func(i int) bool { return k.before(entries[i].key) })
			end = min(start+limit, n)
		}
	}
	chunk := make([]publicRoomChunk, 0, end-start)
	for _, e := range entries[start:end] {
		chunk = append(chunk, e.chunk)
	}
	resp := map[string]any{"chunk": chunk, "total_room_count_estimate": n}
	if start < end && end < n {
		last := entries[end-1].key
		resp["next_batch"] = directoryToken{At: at, Count: last.Count, RoomID: last.RoomID}.String()
	}
	if start < end && start > 0 {
		first := entries[start].key
		resp["prev_batch"] = directoryToken{Back: true, At: at, Count: first.Count, RoomID: first.RoomID}.String()
	}
	return resp, nil
}

type directoryEntry struct {
	chunk publicRoomChunk
	key   directoryKey
}

// directoryEntries describes the published rooms that may be listed.
// Like Synapse, it leaves out published rooms nobody could join or read
// without an invite, so that publishing an invite-only room by mistake
// reveals nothing of it (the spec allows such filters), and empty rooms.
func (a *API) directoryEntries(r *http.Request, rooms []storage.PublishedRoom) ([]directoryEntry, error) {
	nids := make([]int64, len(rooms))
	for i, rm := range rooms {
		nids[i] = rm.NID
	}
	events, err := a.db.RoomLevelState(r.Context(), nids, directoryStateTypes)
	if err != nil {
		return nil, err
	}
	byRoom := map[int64]map[string]storage.EventRow{}
	for _, e := range events {
		if byRoom[e.RoomNID] == nil {
			byRoom[e.RoomNID] = map[string]storage.EventRow{}
		}
		byRoom[e.RoomNID][e.Type] = e
	}
	out := make([]directoryEntry, 0, len(rooms))
	for _, rm := range rooms {
		if rm.Joined == 0 {
			continue
		}
		state := byRoom[rm.NID]
		content := func(typ string) map[string]json.RawMessage {
			e, ok := state[typ]
			if !ok {
				return nil
			}
			return storedContent(e, rm.Version)
		}
		c := publicRoomChunk{
			RoomID: rm.RoomID, NumJoinedMembers: rm.Joined,
			Name:      stringField(content(spec.MRoomName), "name"),
			Topic:     plainTopic(content(spec.MRoomTopic)),
			AvatarURL: stringField(content(spec.MRoomAvatar), "url"),
			RoomType:  stringField(content(spec.MRoomCreate), "type"),
			JoinRule:  stringField(content(spec.MRoomJoinRules), "join_rule"),
		}
		if al := stringField(content(spec.MRoomCanonicalAlias), "alias"); validateAlias(al) == nil {
			c.CanonicalAlias = al
		}
		if c.JoinRule == "" {
			// Without a join rules event, auth treats the room as invite-only.
			c.JoinRule = spec.Invite
		}
		c.WorldReadable = stringField(content(spec.MRoomHistoryVisibility), "history_visibility") == roomserver.VisibilityWorldReadable
		c.GuestCanJoin = stringField(content(spec.MRoomGuestAccess), "guest_access") == "can_join"
		switch c.JoinRule {
		case spec.Public, spec.Knock, "knock_restricted":
		default:
			if !c.WorldReadable {
				continue
			}
		}
		out = append(out, directoryEntry{chunk: c, key: directoryKey{Count: rm.JoinedAt, RoomID: rm.RoomID}})
	}
	return out, nil
}

// filterEntries applies the request's filter: the search term (name,
// topic or canonical alias, case-insensitively) and the room types.
func filterEntries(entries []directoryEntry, req publicRoomsRequest) []directoryEntry {
	if req.Filter == nil {
		return entries
	}
	term := strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
	types := req.Filter.RoomTypes
	out := entries[:0]
	for _, e := range entries {
		if term != "" && !strings.Contains(strings.ToLower(e.chunk.Name), term) &&
			!strings.Contains(strings.ToLower(e.chunk.Topic), term) &&
			!strings.Contains(strings.ToLower(e.chunk.CanonicalAlias), term) {
			continue
		}
		if len(types) > 0 && !roomTypeIn(e.chunk.RoomType, types) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// roomTypeIn matches a room type against a room_types filter, where null
// stands for rooms without a type.
func roomTypeIn(roomType string, types []*string) bool {
	for _, t := range types {
		if (t == nil && roomType == "") || (t != nil && *t == roomType) {
			return true
		}
	}
	return false
}

// storedContent returns the content of a stored event as clients see it:
// redacted when a redaction applies.
func storedContent(e storage.EventRow, version string) map[string]json.RawMessage {
	js := e.JSON
	if e.RedactedBy != "" {
		verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
		if err != nil {
			return nil
		}
		if js, err = verImpl.RedactEventJSON(js); err != nil {
			return nil
		}
	}
	return contentOf(js)
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

// plainTopic is the text/plain form of a topic: from m.topic when it has
// one (spec v1.15), else the topic field.
func plainTopic(content map[string]json.RawMessage) string {
	var block struct {
		Text []struct {
			Body     *string `json:"body"`
			Mimetype string  `json:"mimetype"`
		} `json:"m.text"`
	}
	if raw, ok := content["m.topic"]; ok && json.Unmarshal(raw, &block) == nil {
		for _, t := range block.Text {
			if t.Body != nil && (t.Mimetype == "" || t.Mimetype == "text/plain") {
				return *t.Body
			}
		}
	}
	return stringField(content, "topic")
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
