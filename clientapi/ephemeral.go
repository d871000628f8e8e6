package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

// registerEphemeralRoutes mounts the routes of typing, receipts, read markers, tags and ignored users.
func (a *API) registerEphemeralRoutes(rt *httpapi.Router) {
	a.handle(rt, "PUT", "/rooms/{roomId}/typing/{userId}", guestOK, a.setTyping)
	a.handle(rt, "POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", guestOK, a.postReceipt)
	a.handle(rt, "POST", "/rooms/{roomId}/read_markers", guestOK, a.setReadMarkers)
	a.handle(rt, "GET", "/user/{userId}/rooms/{roomId}/tags", guestOK, a.getTags)
	a.handle(rt, "PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", guestOK, a.putTag)
	a.handle(rt, "DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", guestOK, a.deleteTag)
}

// defaultTypingTimeout applies when a client says it is typing without a
// timeout (the spec's example and what Synapse assumes).
const defaultTypingTimeout = 30 * time.Second

// joinedRoom resolves {roomId} to a room the requester is joined to:
// typing, receipts and read markers are for members, who are the only
// ones to see them (M_FORBIDDEN otherwise).
func (a *API) joinedRoom(r *http.Request) (storage.Room, error) {
	room, err := a.room(r)
	if err != nil {
		return room, err
	}
	m, err := a.rs.Membership(r.Context(), room, requester(r).UserID.String())
	if err != nil {
		return room, err
	}
	if m != spec.Join {
		return room, mxerr.Forbidden("You are not joined to this room")
	}
	return room, nil
}

// joinedUsers lists the room's joined members: whom a typing change or a
// public receipt must wake.
func (a *API) joinedUsers(ctx context.Context, room storage.Room) ([]string, error) {
	members, err := a.db.Members(ctx, room.NID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range members {
		if m.Membership == spec.Join {
			out = append(out, m.UserID)
		}
	}
	return out, nil
}

// setTyping is PUT /rooms/{roomId}/typing/{userId}.
func (a *API) setTyping(r *http.Request) (any, error) {
	me := requester(r).UserID.String()
	if r.PathValue("userId") != me {
		return nil, mxerr.Forbidden("You cannot set another user's typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxerr.MissingParam("typing is required")
	}
	timeout := defaultTypingTimeout
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, mxerr.InvalidParam("timeout must not be negative")
		}
		// Capped before converting: a huge value would overflow.
		timeout = time.Duration(min(*body.Timeout, typing.MaxTimeout.Milliseconds())) * time.Millisecond
	}
	room, err := a.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	wake, err := a.joinedUsers(r.Context(), room)
	if err != nil {
		return nil, err
	}
	a.typing.Set(room.RoomID, me, *body.Typing, timeout, wake)
	return struct{}{}, nil
}

// receiptTarget loads the event a receipt or read marker points at: one
// of the room's that the requester may see. An event they may not see is
// as good as missing (spec, as for /event), so that receipts cannot probe
// for hidden events.
func (a *API) receiptTarget(r *http.Request, room storage.Room, eventID string) (*roomserver.Event, error) {
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		return nil, mxerr.InvalidParam("Invalid event ID")
	}
	notFound := mxerr.NotFound("Event not found")
	ev, err := a.rs.Event(r.Context(), eventID)
	if errors.Is(err, mxerr.NotFound("")) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if ev.RoomNID != room.NID || ev.StreamPos == 0 {
		return nil, notFound
	}
	visible, err := a.rs.FilterVisible(r.Context(), room, requester(r).UserID.String(), []*roomserver.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, notFound
	}
	return ev, nil
}

// maxThreadHops is how far threadOf follows relations to find a thread
// (spec: "a maximum of 3 hops is recommended").
const maxThreadHops = 3

// threadOf returns the root of the thread ev is in, or "" for the main
// timeline: the target of an m.thread relation, found by following
// relations (a reaction to a threaded reply is in that thread).
func (a *API) threadOf(ctx context.Context, ev *roomserver.Event) (string, error) {
	for range maxThreadHops {
		if ev.RelType == "m.thread" {
			return ev.RelatesTo, nil
		}
		if ev.RelatesTo == "" {
			return "", nil
		}
		parent, err := a.rs.Event(ctx, ev.RelatesTo)
		if errors.Is(err, mxerr.NotFound("")) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if parent.RoomNID != ev.RoomNID {
			return "", nil
		}
		ev = parent
	}
	return "", nil
}

// receiptTypes are the receipt types clients may send; m.fully_read moves
// the read marker instead (spec: /receipt calls /read_markers for it).
var receiptTypes = map[string]bool{storage.ReceiptRead: true, storage.ReceiptReadPrivate: true, "m.fully_read": true}

// postReceipt is POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (a *API) postReceipt(r *http.Request) (any, error) {
	typ := r.PathValue("receiptType")
	if !receiptTypes[typ] {
		return nil, mxerr.InvalidParam("Receipt type must be m.read, m.read.private or m.fully_read")
	}
	var body struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	var thread string
	if body.ThreadID != nil {
		if json.Unmarshal(body.ThreadID, &thread) != nil || thread == "" {
			return nil, mxerr.InvalidParam("thread_id field must be a non-empty string")
		}
		if typ == "m.fully_read" {
			return nil, mxerr.InvalidParam("thread_id is not allowed for m.fully_read")
		}
		if thread != storage.ThreadMain && !strings.HasPrefix(thread, "$") {
			return nil, mxerr.InvalidParam("thread_id must be main or a thread root's event ID")
		}
	}
	room, err := a.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.receiptTarget(r, room, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	if typ == "m.fully_read" {
		return struct{}{}, a.moveFullyRead(r, room, ev)
	}
	if thread != "" {
		if err := a.checkThread(r.Context(), ev, thread); err != nil {
			return nil, err
		}
	}
	return struct{}{}, a.putReceipt(r, room, typ, thread, ev)
}

// checkThread refuses a threaded receipt for an event outside that thread
// (spec: 400 when "the event_id is not related to the thread_id"). A
// thread's root counts as part of its thread too, as clients send the
// root's receipt when a thread is opened.
func (a *API) checkThread(ctx context.Context, ev *roomserver.Event, thread string) error {
	in, err := a.threadOf(ctx, ev)
	if err != nil {
		return err
	}
	switch {
	case thread == storage.ThreadMain && in == "":
	case thread != storage.ThreadMain && (in == thread || ev.EventID() == thread):
	default:
		return mxerr.InvalidParam("The event is not in thread " + thread)
	}
	return nil
}

// errNotAdvanced ends a receipt write that changed nothing, so that the
// stream wakes nobody for it.
var errNotAdvanced = errors.New("receipt did not advance")

// putReceipt records a receipt at a new stream position, unless it is
// for an event no later than the user's current one (spec: receipts are
// "up to" markers, so an older one adds nothing and is ignored).
func (a *API) putReceipt(r *http.Request, room storage.Room, typ, thread string, ev *roomserver.Event) error {
	me := requester(r).UserID.String()
	wake := []string{me}
	if typ == storage.ReceiptRead {
		var err error
		if wake, err = a.joinedUsers(r.Context(), room); err != nil {
			return err
		}
	}
	err := a.stream.Write(1, wake, func(pos int64) error {
		advanced, err := a.db.PutReceipt(r.Context(), storage.Receipt{
			RoomNID: room.NID, UserID: me, Type: typ, ThreadID: thread, EventID: ev.EventID(),
			EventPos: ev.StreamPos, TS: a.now().UnixMilli(), StreamPos: pos,
		})
		if err == nil && !advanced {
			return errNotAdvanced
		}
		return err
	})
	if errors.Is(err, errNotAdvanced) {
		return nil
	}
	return err
}

// userLocks serialize the read-modify-write updates of one user's account
// data (tags, the read marker) within this process, which alone writes
// them. Striped by user so that the set stays bounded; a shared stripe
// only costs a short wait.
var userLocks [64]sync.Mutex

func lockUser(userID string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	mu := &userLocks[h.Sum32()%uint32(len(userLocks))]
	mu.Lock()
	return mu.Unlock
}

// putOwnAccountData writes one entry of the requester's account data at a
// new stream position, waking the requester's syncs.
func (a *API) putOwnAccountData(r *http.Request, roomID, typ string, content []byte) error {
	me := requester(r)
	return a.stream.Write(1, []string{me.UserID.String()}, func(pos int64) error {
		return a.db.PutAccountData(r.Context(), me.Localpart(), roomID, typ, content, pos)
	})
}

// moveFullyRead sets the m.fully_read room account data to ev, unless the
// marker already is at ev or a later event: like Synapse, the marker only
// moves forward, so that a client with a stale view cannot undo another
// device's progress.
func (a *API) moveFullyRead(r *http.Request, room storage.Room, ev *roomserver.Event) error {
	me := requester(r)
	defer lockUser(me.UserID.String())()
	cur, err := a.db.AccountDataEntry(r.Context(), me.Localpart(), room.RoomID, "m.fully_read")
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return err
	default:
		var c struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(cur, &c) == nil && c.EventID != "" {
			prev, err := a.rs.Event(r.Context(), c.EventID)
			if err != nil && !errors.Is(err, mxerr.NotFound("")) {
				return err
			}
			if err == nil && prev.RoomNID == room.NID && prev.StreamPos >= ev.StreamPos {
				return nil
			}
		}
	}
	content, err := json.Marshal(map[string]string{"event_id": ev.EventID()})
	if err != nil {
		return err
	}
	return a.putOwnAccountData(r, room.RoomID, "m.fully_read", content)
}

// setReadMarkers is POST /rooms/{roomId}/read_markers.
func (a *API) setReadMarkers(r *http.Request) (any, error) {
	var body struct {
		FullyRead   *string `json:"m.fully_read"`
		Read        *string `json:"m.read"`
		ReadPrivate *string `json:"m.read.private"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	room, err := a.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	// Every event is checked before anything is written, so that a bad
	// one leaves the markers as they were.
	var fullyRead, read, readPrivate *roomserver.Event
	for _, m := range []struct {
		id  *string
		out **roomserver.Event
	}{{body.FullyRead, &fullyRead}, {body.Read, &read}, {body.ReadPrivate, &readPrivate}} {
		if m.id == nil {
			continue
		}
		if *m.out, err = a.receiptTarget(r, room, *m.id); err != nil {
			return nil, err
		}
	}
	if read != nil {
		if err := a.putReceipt(r, room, storage.ReceiptRead, "", read); err != nil {
			return nil, err
		}
	}
	if readPrivate != nil {
		if err := a.putReceipt(r, room, storage.ReceiptReadPrivate, "", readPrivate); err != nil {
			return nil, err
		}
	}
	if fullyRead != nil {
		if err := a.moveFullyRead(r, room, fullyRead); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// maxTagBytes is the longest tag name (spec: "MUST NOT exceed 255 bytes").
const maxTagBytes = 255

// tagTarget checks that the requester addresses their own tags of a valid
// room ID and returns it.
func tagTarget(r *http.Request) (string, error) {
	if r.PathValue("userId") != requester(r).UserID.String() {
		return "", mxerr.Forbidden("You cannot access another user's tags")
	}
	roomID := r.PathValue("roomId")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", mxerr.InvalidParam("Invalid room ID")
	}
	return roomID, nil
}

func validTag(tag string) error {
	if tag == "" || len(tag) > maxTagBytes {
		return mxerr.InvalidParam("Tag names must be 1 to 255 bytes long")
	}
	return nil
}

// roomTags reads the m.tag content: its tags, and the other top-level
// fields to keep when writing it back. Content set through the account
// data API that lacks a tags object has no tags.
func (a *API) roomTags(r *http.Request, roomID string) (content, tags map[string]json.RawMessage, err error) {
	content, tags = map[string]json.RawMessage{}, map[string]json.RawMessage{}
	raw, err := a.db.AccountDataEntry(r.Context(), requester(r).Localpart(), roomID, "m.tag")
	if errors.Is(err, storage.ErrNotFound) {
		return content, tags, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if json.Unmarshal(raw, &content) != nil {
		content = map[string]json.RawMessage{}
	}
	if json.Unmarshal(content["tags"], &tags) != nil || tags == nil {
		tags = map[string]json.RawMessage{}
	}
	return content, tags, nil
}

// writeTags stores the m.tag content with tags.
func (a *API) writeTags(r *http.Request, roomID string, content, tags map[string]json.RawMessage) error {
	t, err := json.Marshal(tags)
	if err != nil {
		return err
	}
	content["tags"] = t
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	return a.putOwnAccountData(r, roomID, "m.tag", raw)
}

// getTags is GET /user/{userId}/rooms/{roomId}/tags.
func (a *API) getTags(r *http.Request) (any, error) {
	roomID, err := tagTarget(r)
	if err != nil {
		return nil, err
	}
	_, tags, err := a.roomTags(r, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tags}, nil
}

// putTag is PUT /user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *API) putTag(r *http.Request) (any, error) {
	roomID, err := tagTarget(r)
	if err != nil {
		return nil, err
	}
	tag := r.PathValue("tag")
	if err := validTag(tag); err != nil {
		return nil, err
	}
	raw, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httpapi.UnmarshalObject(raw, &body); err != nil {
		return nil, err
	}
	if o, ok := body["order"]; ok {
		var order float64
		if json.Unmarshal(o, &order) != nil || string(o) == "null" {
			return nil, mxerr.BadJSON("order must be a number")
		}
		if order < 0 || order > 1 {
			return nil, mxerr.InvalidParam("order must be between 0 and 1")
		}
	}
	// The whole body is kept: clients may store their own fields with a
	// tag (spec: "extra data for the tag").
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	defer lockUser(requester(r).UserID.String())()
	content, tags, err := a.roomTags(r, roomID)
	if err != nil {
		return nil, err
	}
	tags[tag] = data
	return struct{}{}, a.writeTags(r, roomID, content, tags)
}

// deleteTag is DELETE /user/{userId}/rooms/{roomId}/tags/{tag}.
func (a *API) deleteTag(r *http.Request) (any, error) {
	roomID, err := tagTarget(r)
	if err != nil {
		return nil, err
	}
	tag := r.PathValue("tag")
	if err := validTag(tag); err != nil {
		return nil, err
	}
	defer lockUser(requester(r).UserID.String())()
	content, tags, err := a.roomTags(r, roomID)
	if err != nil {
		return nil, err
	}
	if _, ok := tags[tag]; !ok {
		// Nothing changes, so no new account data for sync to send.
		return struct{}{}, nil
	}
	delete(tags, tag)
	return struct{}{}, a.writeTags(r, roomID, content, tags)
}

// validateIgnoredUserList checks m.ignored_user_list content as the
// account data API receives it (spec: ignored_users maps user IDs to
// objects), since sync filters events and invites by it.
func validateIgnoredUserList(obj map[string]json.RawMessage) error {
	raw, ok := obj["ignored_users"]
	if !ok {
		return mxerr.BadJSON("m.ignored_user_list needs an ignored_users object")
	}
	var users map[string]json.RawMessage
	if json.Unmarshal(raw, &users) != nil || users == nil {
		return mxerr.BadJSON("ignored_users must be an object")
	}
	for u, v := range users {
		if _, err := spec.NewUserID(u, false); err != nil {
			return mxerr.BadJSON("ignored_users has an invalid user ID: " + u)
		}
		var o map[string]json.RawMessage
		if json.Unmarshal(v, &o) != nil || o == nil {
			return mxerr.BadJSON("The value for " + u + " in ignored_users must be an object")
		}
	}
	return nil
}
