// Package roomdir describes rooms to people who are not in them: the
// published room directory that both the client API and the federation
// API serve (/publicRooms), and the room summaries of the space
// hierarchy. Both APIs must list the same rooms in the same way, so the
// listing lives here rather than in either of them.
package roomdir

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/storage"
)

const (
	// DefaultLimit applies when a request names no limit, or 0 (Synapse
	// would send everything, and the federation API says 0 means no
	// limit; a page keeps answers bounded, and next_batch gives the rest).
	DefaultLimit = 100
	// MaxLimit caps the limit a request may ask for.
	MaxLimit = 500
	// maxSnapshotAge is how many stream positions a pagination token's
	// snapshot may lie behind: each page undoes the membership changes
	// since the snapshot, which must stay cheap.
	maxSnapshotAge = 50_000
)

// visibilityWorldReadable is the history visibility that lets anyone read.
const visibilityWorldReadable = "world_readable"

// Filter narrows a listing (spec: POST /publicRooms filter).
type Filter struct {
	GenericSearchTerm string `json:"generic_search_term,omitempty"`
	// RoomTypes lists the room types wanted; nil stands for rooms without
	// a type.
	RoomTypes []*string `json:"room_types,omitempty"`
}

// Request is a /publicRooms request, of either API.
type Request struct {
	Limit                *int    `json:"limit,omitempty"`
	Since                string  `json:"since,omitempty"`
	Filter               *Filter `json:"filter,omitempty"`
	IncludeAllNetworks   bool    `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string  `json:"third_party_instance_id,omitempty"`
}

// ParseQuery reads the query string of GET /publicRooms (server excluded).
func ParseQuery(q url.Values) (Request, error) {
	var req Request
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return req, mxerr.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	switch q.Get("include_all_networks") {
	case "", "false":
	case "true":
		req.IncludeAllNetworks = true
	default:
		return req, mxerr.InvalidParam("include_all_networks must be true or false")
	}
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	return req, nil
}

// Summary is what the directory shows of a room (spec: PublishedRoomsChunk).
type Summary struct {
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

// Details is a Summary plus what the space hierarchy shows besides (spec:
// RoomSummary).
type Details struct {
	Summary
	// AllowedRoomIDs are the rooms a restricted join rule names.
	AllowedRoomIDs []string
	// Encryption is the room's encryption algorithm, if any.
	Encryption string
}

// Response is a page of the directory (spec: public_rooms_response).
type Response struct {
	Chunk                  []Summary `json:"chunk"`
	NextBatch              string    `json:"next_batch,omitempty"`
	PrevBatch              string    `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int       `json:"total_room_count_estimate"`
}

// StateTypes are the room-level state events a summary is built from.
var StateTypes = []string{
	spec.MRoomCreate, spec.MRoomName, spec.MRoomTopic, spec.MRoomCanonicalAlias, spec.MRoomAvatar,
	spec.MRoomJoinRules, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess, "m.room.encryption",
}

// Describe builds a room's summary from its current room-level state:
// content returns the content of the state event of a type with an empty
// state key (nil when there is none), redacted where a redaction applies.
func Describe(roomID string, joined int64, content func(evType string) map[string]json.RawMessage) Details {
	d := Details{Summary: Summary{
		RoomID: roomID, NumJoinedMembers: joined,
		Name:      stringField(content(spec.MRoomName), "name"),
		Topic:     plainTopic(content(spec.MRoomTopic)),
		AvatarURL: stringField(content(spec.MRoomAvatar), "url"),
		RoomType:  stringField(content(spec.MRoomCreate), "type"),
	}}
	jr := content(spec.MRoomJoinRules)
	d.JoinRule = stringField(jr, "join_rule")
	if al := stringField(content(spec.MRoomCanonicalAlias), "alias"); validAlias(al) {
		d.CanonicalAlias = al
	}
	if d.JoinRule == "" {
		// Without a join rules event, auth treats the room as invite-only.
		d.JoinRule = spec.Invite
	}
	d.WorldReadable = stringField(content(spec.MRoomHistoryVisibility), "history_visibility") == visibilityWorldReadable
	d.GuestCanJoin = stringField(content(spec.MRoomGuestAccess), "guest_access") == "can_join"
	d.Encryption = stringField(content("m.room.encryption"), "algorithm")
	if d.JoinRule == spec.Restricted || d.JoinRule == spec.KnockRestricted {
		var allow []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		}
		if raw, ok := jr["allow"]; ok && json.Unmarshal(raw, &allow) == nil {
			for _, a := range allow {
				if a.Type == "m.room_membership" && strings.HasPrefix(a.RoomID, "!") {
					d.AllowedRoomIDs = append(d.AllowedRoomIDs, a.RoomID)
				}
			}
		}
	}
	return d
}

// OpenToAll reports whether anyone may see the room's summary without an
// invite: its join rule lets anyone join or knock, or its history is
// world-readable.
func (d Summary) OpenToAll() bool {
	switch d.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true
	}
	return d.WorldReadable
}

// Lister lists the published room directory.
type Lister struct {
	db     *storage.DB
	stream *stream.Stream
}

// New builds a Lister on the database and the global stream (whose
// position anchors pagination).
func New(db *storage.DB, st *stream.Stream) *Lister { return &Lister{db: db, stream: st} }

// key is a room's place in the directory's order: most joined members
// first, then by room ID. The count is the one at the listing's snapshot,
// not the current one (see token).
type key struct {
	Count  int64
	RoomID string
}

func (k key) before(o key) bool {
	return k.Count > o.Count || (k.Count == o.Count && k.RoomID < o.RoomID)
}

// token is a next_batch or prev_batch token: the snapshot (At) and the key
// of the room at the page's edge (Count, RoomID).
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
// older than maxSnapshotAge positions is re-anchored on the current state,
// where the guarantee lapses (a room may then be skipped or repeated
// once). Counts at the snapshot assume linear room histories (see
// storage.PublishedRooms). Tokens are not signed: a forged one only
// chooses another starting point, and its snapshot is clamped to the
// permitted window, which bounds the work it can cause.
type token struct {
	Back   bool   `json:"b,omitempty"`
	At     int64  `json:"s"`
	Count  int64  `json:"c"`
	RoomID string `json:"r"`
}

func (t token) String() string {
	raw, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseToken(s string) (token, error) {
	var t token
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(raw, &t) != nil || t.RoomID == "" || t.At < 0 {
		return t, mxerr.InvalidParam("Invalid pagination token")
	}
	return t, nil
}

type entry struct {
	chunk Summary
	key   key
}

// List returns a page of the published room directory.
func (l *Lister) List(ctx context.Context, req Request) (*Response, error) {
	limit := DefaultLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, mxerr.InvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, MaxLimit)
		}
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return nil, mxerr.InvalidParam("include_all_networks cannot be combined with third_party_instance_id")
	}
	var tok *token
	if req.Since != "" {
		t, err := parseToken(req.Since)
		if err != nil {
			return nil, err
		}
		tok = &t
	}
	if req.ThirdPartyInstanceID != "" {
		// No application service publishes rooms to a network here.
		return &Response{Chunk: []Summary{}}, nil
	}

	// Positions up to Current are all committed, so the state there is
	// complete and stays the same for every later page.
	at := l.stream.Current()
	if tok != nil && tok.At <= at && tok.At >= at-maxSnapshotAge {
		at = tok.At
	}
	rooms, err := l.db.PublishedRooms(ctx, at)
	if err != nil {
		return nil, err
	}
	entries, err := l.entries(ctx, rooms)
	if err != nil {
		return nil, err
	}
	entries = filterEntries(entries, req.Filter)
	sort.Slice(entries, func(i, j int) bool { return entries[i].key.before(entries[j].key) })

	n := len(entries)
	start, end := 0, min(limit, n)
	if tok != nil {
		k := key{Count: tok.Count, RoomID: tok.RoomID}
		if tok.Back {
			end = sort.Search(n, func(i int) bool { return !entries[i].key.before(k) })
			start = max(0, end-limit)
		} else {
			start = sort.Search(n, func(i int) bool { return k.before(entries[i].key) })
			end = min(start+limit, n)
		}
	}
	resp := &Response{Chunk: make([]Summary, 0, end-start), TotalRoomCountEstimate: n}
	for _, e := range entries[start:end] {
		resp.Chunk = append(resp.Chunk, e.chunk)
	}
	if start < end && end < n {
		last := entries[end-1].key
		resp.NextBatch = token{At: at, Count: last.Count, RoomID: last.RoomID}.String()
	}
	if start < end && start > 0 {
		first := entries[start].key
		resp.PrevBatch = token{Back: true, At: at, Count: first.Count, RoomID: first.RoomID}.String()
	}
	return resp, nil
}

// entries describes the published rooms that may be listed. Like Synapse,
// it leaves out published rooms nobody could join or read without an
// invite, so that publishing an invite-only room by mistake reveals
// nothing of it (the spec allows such filters), and empty rooms.
func (l *Lister) entries(ctx context.Context, rooms []storage.PublishedRoom) ([]entry, error) {
	nids := make([]int64, len(rooms))
	for i, rm := range rooms {
		nids[i] = rm.NID
	}
	events, err := l.db.RoomLevelState(ctx, nids, StateTypes)
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
	out := make([]entry, 0, len(rooms))
	for _, rm := range rooms {
		if rm.Joined == 0 {
			continue
		}
		state := byRoom[rm.NID]
		d := Describe(rm.RoomID, rm.Joined, func(typ string) map[string]json.RawMessage {
			e, ok := state[typ]
			if !ok {
				return nil
			}
			return storedContent(e, rm.Version)
		})
		if !d.OpenToAll() {
			continue
		}
		out = append(out, entry{chunk: d.Summary, key: key{Count: rm.JoinedAt, RoomID: rm.RoomID}})
	}
	return out, nil
}

// filterEntries applies a filter: the search term (name, topic or
// canonical alias, case-insensitively) and the room types.
func filterEntries(entries []entry, f *Filter) []entry {
	if f == nil {
		return entries
	}
	term := strings.ToLower(strings.TrimSpace(f.GenericSearchTerm))
	out := entries[:0]
	for _, e := range entries {
		if term != "" && !strings.Contains(strings.ToLower(e.chunk.Name), term) &&
			!strings.Contains(strings.ToLower(e.chunk.Topic), term) &&
			!strings.Contains(strings.ToLower(e.chunk.CanonicalAlias), term) {
			continue
		}
		if len(f.RoomTypes) > 0 && !roomTypeIn(e.chunk.RoomType, f.RoomTypes) {
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

// storedContent returns the content of a stored event as others see it:
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

// validAlias checks the #localpart:server form of a room alias (as the
// client API's alias checks do).
func validAlias(alias string) bool {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	return strings.HasPrefix(alias, "#") && ok && local != "" && server != "" && len(alias) <= 255 &&
		!strings.ContainsAny(local, " \t\n\x00")
}

// DescribeStored builds the summary of a stored room from its current
// state; joined is its number of joined members.
func DescribeStored(ctx context.Context, db *storage.DB, room storage.Room, joined int64) (Details, error) {
	events, err := db.RoomLevelState(ctx, []int64{room.NID}, StateTypes)
	if err != nil {
		return Details{}, err
	}
	state := make(map[string]storage.EventRow, len(events))
	for _, e := range events {
		state[e.Type] = e
	}
	return Describe(room.RoomID, joined, func(typ string) map[string]json.RawMessage {
		e, ok := state[typ]
		if !ok {
			return nil
		}
		return storedContent(e, room.Version)
	}), nil
}
