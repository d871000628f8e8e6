package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

// relClock is a server clock that moves 1ms on every reading, so that
// events sent one after the other never share an origin_server_ts (edit
// order is by timestamp), and that a test can move forward at will.
type relClock struct{ ms atomic.Int64 }

func (c *relClock) now() time.Time          { return time.UnixMilli(c.ms.Add(1)) }
func (c *relClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// startRelServer starts a server on a relClock.
func startRelServer(t *testing.T) (*testserver.Server, *relClock) {
	t.Helper()
	c := &relClock{}
	c.ms.Store(time.Now().UnixMilli())
	return testserver.Start(t, func(s *testserver.Setup) { s.Now = c.now }), c
}

// relRoom creates a public room of creator, with the given history
// visibility from the start unless empty, and that the others join.
func relRoom(t *testing.T, creator *mautrix.Client, visibility string, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	req := &mautrix.ReqCreateRoom{Preset: "public_chat"}
	if visibility != "" {
		req.InitialState = []*event.Event{{
			Type:    event.StateHistoryVisibility,
			Content: event.Content{Raw: map[string]any{"history_visibility": visibility}},
		}}
	}
	resp, err := creator.CreateRoom(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		if _, err := o.JoinRoomByID(ctx, resp.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	return resp.RoomID
}

// send sends a message event of any type and content.
func send(t *testing.T, cli *mautrix.Client, roomID id.RoomID, typ string, content map[string]any) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(ctx, roomID, event.Type{Type: typ, Class: event.MessageEventType}, content)
	if err != nil {
		t.Fatalf("sending %s: %v", typ, err)
	}
	return resp.EventID
}

func text(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	return send(t, cli, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func edit(t *testing.T, cli *mautrix.Client, roomID id.RoomID, original id.EventID, body string) id.EventID {
	t.Helper()
	return send(t, cli, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": original},
	})
}

func threadReply(t *testing.T, cli *mautrix.Client, roomID id.RoomID, root id.EventID, body string) id.EventID {
	t.Helper()
	return send(t, cli, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
	})
}

func react(t *testing.T, cli *mautrix.Client, roomID id.RoomID, target id.EventID, key string) id.EventID {
	t.Helper()
	return send(t, cli, roomID, "m.reaction", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": key},
	})
}

func redact(t *testing.T, cli *mautrix.Client, roomID id.RoomID, target id.EventID) {
	t.Helper()
	if _, err := cli.RedactEvent(ctx, roomID, target); err != nil {
		t.Fatal(err)
	}
}

func v1URL(s *testserver.Server, path string) string { return s.URL + "/_matrix/client/v1" + path }

func roomPath(roomID id.RoomID, rest string) string {
	return "/rooms/" + url.PathEscape(string(roomID)) + rest
}

func esc(e id.EventID) string { return url.PathEscape(string(e)) }

// ids lists the event IDs of events.
func ids(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// rawEvent is the part of a client event the tests read from raw answers.
type rawEvent struct {
	EventID  id.EventID `json:"event_id"`
	Unsigned struct {
		Relations map[string]json.RawMessage `json:"m.relations"`
	} `json:"unsigned"`
}

// getJSON sends a GET and decodes a 200 answer into v.
func getJSON(t *testing.T, u, token string, v any) {
	t.Helper()
	r := do(t, "GET", u, token, nil)
	if r.Status != 200 {
		t.Fatalf("GET %s: %d %s", u, r.Status, r.Raw)
	}
	if err := json.Unmarshal(r.Raw, v); err != nil {
		t.Fatal(err)
	}
}

func latestEdit(t *testing.T, cli *mautrix.Client, roomID id.RoomID, original id.EventID) id.EventID {
	t.Helper()
	ev, err := cli.GetEvent(ctx, roomID, original)
	if err != nil {
		t.Fatal(err)
	}
	if e := ev.Unsigned.Relations.GetLatestEdit(); e != nil {
		return e.ID
	}
	return ""
}

func TestBundledEdits(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	roomID := relRoom(t, alice, "", bob)

	original := text(t, alice, roomID, "I like cake")
	if got := latestEdit(t, bob, roomID, original); got != "" {
		t.Fatalf("unedited event bundles edit %s", got)
	}
	first := edit(t, alice, roomID, original, "I like chocolate cake")
	second := edit(t, alice, roomID, original, "I really like chocolate cake")
	// Invalid edits, all newer than the valid ones: by another sender, of
	// another type, without m.new_content, and an edit of an edit.
	edit(t, bob, roomID, original, "bob was here")
	send(t, alice, roomID, "org.example.other", map[string]any{
		"m.new_content": map[string]any{"body": "x"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": original},
	})
	send(t, alice, roomID, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": "* no new content",
		"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": original},
	})
	editOfEdit := edit(t, alice, roomID, second, "edited edit")

	if got := latestEdit(t, bob, roomID, original); got != second {
		t.Fatalf("bundled edit = %s, want the latest valid one %s", got, second)
	}
	if got := latestEdit(t, bob, roomID, second); got != "" {
		t.Fatalf("an edit of an edit %s was bundled with the edit", got)
	}

	// The whole replacement event is bundled (spec v1.7+), and the
	// original's content stays.
	ev, err := bob.GetEvent(ctx, roomID, original)
	if err != nil {
		t.Fatal(err)
	}
	repl := ev.Unsigned.Relations.GetLatestEdit()
	_ = repl.Content.ParseRaw(repl.Type)
	_ = ev.Content.ParseRaw(ev.Type)
	if repl.Sender != alice.UserID || repl.Type != event.EventMessage || repl.Timestamp == 0 ||
		repl.Content.AsMessage().NewContent == nil || repl.Content.AsMessage().NewContent.Body != "I really like chocolate cake" {
		t.Fatalf("bundled replacement = %+v", repl)
	}
	if ev.Content.AsMessage().Body != "I like cake" {
		t.Fatalf("original content replaced: %q", ev.Content.AsMessage().Body)
	}

	// Every endpoint that serves events bundles: /messages, /context.
	msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range msgs.Chunk {
		if e.ID == original && (e.Unsigned.Relations.GetLatestEdit() == nil || e.Unsigned.Relations.GetLatestEdit().ID != second) {
			t.Fatalf("/messages bundles %+v", e.Unsigned.Relations)
		}
	}
	c, err := bob.Context(ctx, roomID, original, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Event.Unsigned.Relations.GetLatestEdit(); e == nil || e.ID != second {
		t.Fatalf("/context bundles %+v", c.Event.Unsigned.Relations)
	}

	// Redacting the latest edit brings back the one before it.
	redact(t, alice, roomID, second)
	if got := latestEdit(t, bob, roomID, original); got != first {
		t.Fatalf("after redacting the latest edit, bundled = %s, want %s", got, first)
	}
	// A redacted original bundles no edit at all.
	redact(t, alice, roomID, original)
	if got := latestEdit(t, bob, roomID, original); got != "" {
		t.Fatalf("redacted original bundles edit %s", got)
	}
	_ = editOfEdit
}

func TestEditSameTimestampLargestIDWins(t *testing.T) {
	t.Parallel()
	// A clock that stands still: both edits share origin_server_ts.
	fixed := time.Now()
	s := testserver.Start(t, func(s *testserver.Setup) { s.Now = func() time.Time { return fixed } })
	alice := registerUser(t, s, "alice")
	roomID := relRoom(t, alice, "")
	original := text(t, alice, roomID, "hello")
	a := edit(t, alice, roomID, original, "one")
	b := edit(t, alice, roomID, original, "two")
	want := max(a, b)
	if got := latestEdit(t, alice, roomID, original); got != want {
		t.Fatalf("bundled = %s, want the larger event ID %s (of %s, %s)", got, want, a, b)
	}
}

// threadsPage is an answer of GET /threads.
type threadsPage struct {
	Chunk     []rawEvent `json:"chunk"`
	NextBatch string     `json:"next_batch"`
}

// listThreads walks every page of GET /threads.
func listThreads(t *testing.T, s *testserver.Server, cli *mautrix.Client, roomID id.RoomID, include string, limit int) []id.EventID {
	t.Helper()
	var out []id.EventID
	from := ""
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatal("threads pagination does not end")
		}
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if include != "" {
			q.Set("include", include)
		}
		if from != "" {
			q.Set("from", from)
		}
		var p threadsPage
		getJSON(t, v1URL(s, roomPath(roomID, "/threads")+"?"+q.Encode()), cli.AccessToken, &p)
		for _, e := range p.Chunk {
			out = append(out, e.EventID)
		}
		if p.NextBatch == "" {
			return out
		}
		from = p.NextBatch
	}
}

func TestThreads(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	roomID := relRoom(t, alice, "", bob, carol)

	rootA := text(t, alice, roomID, "A")
	rootB := text(t, bob, roomID, "B")
	rootC := text(t, bob, roomID, "C")
	text(t, alice, roomID, "no thread here")
	threadReply(t, bob, roomID, rootA, "a1")
	threadReply(t, alice, roomID, rootB, "b1")
	threadReply(t, bob, roomID, rootC, "c1")
	a2 := threadReply(t, bob, roomID, rootA, "a2")

	for _, tc := range []struct {
		name    string
		cli     *mautrix.Client
		include string
		want    []id.EventID
	}{
		{"all, by latest activity", alice, "", []id.EventID{rootA, rootC, rootB}},
		{"all explicitly", carol, "all", []id.EventID{rootA, rootC, rootB}},
		{"alice started A and replied in B", alice, "participated", []id.EventID{rootA, rootB}},
		{"bob replied in A, started B and C", bob, "participated", []id.EventID{rootA, rootC, rootB}},
		{"carol took part in none", carol, "participated", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 2, 50} {
				if got := listThreads(t, s, tc.cli, roomID, tc.include, limit); !slices.Equal(got, tc.want) {
					t.Fatalf("limit %d: threads = %v, want %v", limit, got, tc.want)
				}
			}
		})
	}

	// New activity moves a thread to the top.
	threadReply(t, carol, roomID, rootB, "b2")
	if got := listThreads(t, s, alice, roomID, "", 10); !slices.Equal(got, []id.EventID{rootB, rootA, rootC}) {
		t.Fatalf("after a reply in B: %v", got)
	}

	// The thread summary: count, latest event (with its own edit bundled)
	// and the reader's participation.
	a2edit := edit(t, bob, roomID, a2, "a2, edited")
	for _, tc := range []struct {
		cli          *mautrix.Client
		participated bool
	}{{alice, true}, {bob, true}, {carol, false}} {
		ev, err := tc.cli.GetEvent(ctx, roomID, rootA)
		if err != nil {
			t.Fatal(err)
		}
		th := ev.Unsigned.Relations.GetThread()
		if th == nil || th.Count != 2 || th.LatestEvent == nil || th.LatestEvent.ID != a2 || th.CurrentUserParticipated != tc.participated {
			t.Fatalf("%s: thread summary = %+v", tc.cli.UserID, th)
		}
		if th.LatestEvent.RoomID != roomID || th.LatestEvent.Sender != bob.UserID {
			t.Fatalf("latest event not in the client format: %+v", th.LatestEvent)
		}
		if e := th.LatestEvent.Unsigned.Relations.GetLatestEdit(); e == nil || e.ID != a2edit {
			t.Fatalf("latest event bundles edit %+v, want %s", e, a2edit)
		}
	}
	// /threads returns the roots with their summaries.
	var p threadsPage
	getJSON(t, v1URL(s, roomPath(roomID, "/threads")), carol.AccessToken, &p)
	if len(p.Chunk) != 3 || p.Chunk[0].Unsigned.Relations["m.thread"] == nil {
		t.Fatalf("threads chunk = %+v", p.Chunk)
	}
	// A redacted reply no longer counts.
	redact(t, bob, roomID, a2)
	ev, err := carol.GetEvent(ctx, roomID, rootA)
	if err != nil {
		t.Fatal(err)
	}
	if th := ev.Unsigned.Relations.GetThread(); th.GetCount() != 1 || th.LatestEvent.ID == a2 {
		t.Fatalf("after redacting a2: %+v", th)
	}
}

func TestRelationsPagination(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	roomID := relRoom(t, alice, "", bob)

	target := text(t, alice, roomID, "react to me")
	var reactions []id.EventID
	for i := range 30 {
		cli := alice
		if i%2 == 1 {
			cli = bob
		}
		reactions = append(reactions, react(t, cli, roomID, target, fmt.Sprintf("k%d", i)))
		if i == 14 {
			// Events of other relation types and unrelated events in
			// between must not disturb the pages.
			threadReply(t, bob, roomID, target, "in between")
			text(t, alice, roomID, "unrelated")
		}
	}
	newestFirst := slices.Clone(reactions)
	slices.Reverse(newestFirst)

	walk := func(t *testing.T, req mautrix.ReqGetRelations) []id.EventID {
		t.Helper()
		var got []id.EventID
		for page := 0; ; page++ {
			if page > 40 {
				t.Fatal("pagination does not end")
			}
			resp, err := bob.GetRelations(ctx, roomID, target, &req)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Chunk) > req.Limit {
				t.Fatalf("page of %d > limit %d", len(resp.Chunk), req.Limit)
			}
			got = append(got, ids(resp.Chunk)...)
			if resp.NextBatch == "" {
				return got
			}
			req.From = resp.NextBatch
		}
	}
	for _, tc := range []struct {
		name string
		req  mautrix.ReqGetRelations
		want []id.EventID
	}{
		{"annotations backwards", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 7}, newestFirst},
		{"annotations forwards", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Dir: mautrix.DirectionForward, Limit: 7}, reactions},
		{"by event type", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction, Limit: 4}, newestFirst},
		{"other event type", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventMessage, Limit: 4}, nil},
		{"page size 1", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 1}, newestFirst},
		{"page size 30", mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 30}, newestFirst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := walk(t, tc.req); !slices.Equal(got, tc.want) {
				t.Fatalf("got %d events %v,\nwant %d %v", len(got), got, len(tc.want), tc.want)
			}
		})
	}
	t.Run("all relation types", func(t *testing.T) {
		got := walk(t, mautrix.ReqGetRelations{Limit: 8})
		if len(got) != 31 {
			t.Fatalf("got %d children, want 30 reactions and a thread reply", len(got))
		}
	})
	t.Run("from and to bound one page", func(t *testing.T) {
		p1, err := bob.GetRelations(ctx, roomID, target, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		p2, err := bob.GetRelations(ctx, roomID, target, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 5, From: p1.NextBatch})
		if err != nil {
			t.Fatal(err)
		}
		if p2.PrevBatch != p1.NextBatch {
			t.Fatalf("prev_batch = %q, want the from token %q", p2.PrevBatch, p1.NextBatch)
		}
		again, err := bob.GetRelations(ctx, roomID, target, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, Limit: 50, From: p1.NextBatch, To: p2.NextBatch,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(again.Chunk), ids(p2.Chunk)) {
			t.Fatalf("from page 1 to page 2 = %v, want page 2 %v", ids(again.Chunk), ids(p2.Chunk))
		}
		// The other way round is the empty set (spec).
		none, err := bob.GetRelations(ctx, roomID, target, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, From: p2.NextBatch, To: p1.NextBatch, Limit: 50,
		})
		if err != nil || len(none.Chunk) != 0 {
			t.Fatalf("from page 2 to page 1 = %v, %v", none, err)
		}
	})

	// Reactions are not bundled (spec: m.annotation is not aggregated).
	var raw rawEvent
	getJSON(t, clientURL(s, roomPath(roomID, "/event/"+esc(target))), bob.AccessToken, &raw)
	if _, ok := raw.Unsigned.Relations["m.annotation"]; ok {
		t.Fatalf("annotations bundled: %s", raw.Unsigned.Relations)
	}
	// A redacted reaction is no longer a child.
	redact(t, alice, roomID, reactions[0])
	got := walk(t, mautrix.ReqGetRelations{RelationType: event.RelAnnotation, Limit: 50})
	if len(got) != 29 || slices.Contains(got, reactions[0]) {
		t.Fatalf("after redaction: %d children", len(got))
	}
}

func TestRelationsRecurse(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	roomID := relRoom(t, alice, "")
	root := text(t, alice, roomID, "root")
	reply := threadReply(t, alice, roomID, root, "reply")
	replyEdit := edit(t, alice, roomID, reply, "reply, edited")
	reaction := react(t, alice, roomID, replyEdit, "👍") // depth 3
	deeper := react(t, alice, roomID, reaction, "🙃")    // depth 4: beyond the recursion

	for _, tc := range []struct {
		name      string
		query     string
		want      []id.EventID
		wantDepth any
	}{
		{"direct only", "", []id.EventID{reply}, nil},
		{"recurse=false", "?recurse=false", []id.EventID{reply}, float64(1)},
		{"recurse=true", "?recurse=true", []id.EventID{reaction, replyEdit, reply}, float64(3)},
		// A filter applies at every level: the edit is reached only
		// through the m.thread reply, which m.replace does not match.
		{"filtered at every level", "/m.replace?recurse=true", nil, float64(3)},
		{"thread filter", "/m.thread?recurse=true", []id.EventID{reply}, float64(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "GET", v1URL(s, roomPath(roomID, "/relations/"+esc(root)+tc.query)), alice.AccessToken, nil)
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			var body struct {
				Chunk []rawEvent `json:"chunk"`
			}
			_ = json.Unmarshal(r.Raw, &body)
			var got []id.EventID
			for _, e := range body.Chunk {
				got = append(got, e.EventID)
			}
			if !slices.Equal(got, tc.want) || slices.Contains(got, deeper) {
				t.Fatalf("chunk = %v, want %v", got, tc.want)
			}
			if r.Body["recursion_depth"] != tc.wantDepth {
				t.Fatalf("recursion_depth = %v, want %v", r.Body["recursion_depth"], tc.wantDepth)
			}
		})
	}
}

func TestContext(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	roomID := relRoom(t, alice, "", bob)
	var msgs []id.EventID
	for i := range 10 {
		cli := alice
		if i == 3 {
			cli = bob
		}
		msgs = append(msgs, text(t, cli, roomID, fmt.Sprintf("m%d", i)))
	}
	onlyMessages := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}

	c, err := alice.Context(ctx, roomID, msgs[5], onlyMessages, 4)
	if err != nil {
		t.Fatal(err)
	}
	if c.Event.ID != msgs[5] || !slices.Equal(ids(c.EventsBefore), []id.EventID{msgs[4], msgs[3]}) ||
		!slices.Equal(ids(c.EventsAfter), []id.EventID{msgs[6], msgs[7]}) {
		t.Fatalf("context = %v < %s > %v", ids(c.EventsBefore), c.Event.ID, ids(c.EventsAfter))
	}
	// The tokens continue in /messages on either side.
	back, err := alice.Messages(ctx, roomID, c.Start, "", mautrix.DirectionBackward, onlyMessages, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(back.Chunk), []id.EventID{msgs[2], msgs[1]}) {
		t.Fatalf("/messages back from start = %v", ids(back.Chunk))
	}
	fwd, err := alice.Messages(ctx, roomID, c.End, "", mautrix.DirectionForward, onlyMessages, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(fwd.Chunk), []id.EventID{msgs[8], msgs[9]}) {
		t.Fatalf("/messages forward from end = %v", ids(fwd.Chunk))
	}
	// Without lazy loading, the state is the whole room state.
	hasCreate := slices.ContainsFunc(c.State, func(e *event.Event) bool { return e.Type == event.StateCreate })
	if hasCreate {
		t.Fatal("the type filter was not applied to the state")
	}
	var full mautrix.RespContext // limit=0, which mautrix does not send
	getJSON(t, clientURL(s, roomPath(roomID, "/context/"+esc(msgs[5])+"?limit=0")), alice.AccessToken, &full)
	if len(full.EventsBefore)+len(full.EventsAfter) != 0 || full.Event.ID != msgs[5] {
		t.Fatalf("limit 0 = %v, %v", ids(full.EventsBefore), ids(full.EventsAfter))
	}
	if !slices.ContainsFunc(full.State, func(e *event.Event) bool { return e.Type == event.StateCreate }) {
		t.Fatalf("state without a filter lacks m.room.create: %v", ids(full.State))
	}
	// Lazy loading: only the members who sent the events returned.
	lazy, err := alice.Context(ctx, roomID, msgs[4], &mautrix.FilterPart{LazyLoadMembers: true}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, e := range lazy.State {
		if e.Type != event.StateMember {
			t.Fatalf("lazy state holds %s", e.Type)
		}
		members = append(members, *e.StateKey)
	}
	slices.Sort(members)
	if want := []string{alice.UserID.String(), bob.UserID.String()}; !slices.Equal(members, want) {
		t.Fatalf("lazy members = %v, want %v", members, want)
	}
	// The end of the room.
	last, err := alice.Context(ctx, roomID, msgs[9], nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(last.EventsAfter) != 0 {
		t.Fatalf("events after the last one: %v", ids(last.EventsAfter))
	}
	after, err := alice.Messages(ctx, roomID, last.End, "", mautrix.DirectionForward, nil, 5)
	if err != nil || len(after.Chunk) != 0 {
		t.Fatalf("/messages after the end = %v, %v", after, err)
	}
}

func TestTimestampToEvent(t *testing.T) {
	t.Parallel()
	s, clock := startRelServer(t)
	alice := registerUser(t, s, "alice")
	carol := registerUser(t, s, "carol")
	roomID := relRoom(t, alice, "joined")

	var evs []id.EventID
	var stamps []int64
	for i := range 3 {
		clock.advance(10 * time.Second)
		e := text(t, alice, roomID, fmt.Sprintf("e%d", i))
		got, err := alice.GetEvent(ctx, roomID, e)
		if err != nil {
			t.Fatal(err)
		}
		evs, stamps = append(evs, e), append(stamps, got.Timestamp)
	}
	clock.advance(10 * time.Second)

	find := func(cli *mautrix.Client, ts int64, dir string) response {
		return do(t, "GET", v1URL(s, roomPath(roomID, fmt.Sprintf("/timestamp_to_event?ts=%d&dir=%s", ts, dir))), cli.AccessToken, nil)
	}
	for _, tc := range []struct {
		name string
		ts   int64
		dir  string
		want id.EventID // "" for 404
	}{
		{"forward from between", stamps[0] + 5000, "f", evs[1]},
		{"backward from between", stamps[0] + 5000, "b", evs[0]},
		{"exact match forward", stamps[1], "f", evs[1]},
		{"exact match backward", stamps[1], "b", evs[1]},
		{"backward from the future", stamps[2] + 60000, "b", evs[2]},
		{"forward into the future", stamps[2] + 1, "f", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := find(alice, tc.ts, tc.dir)
			if tc.want == "" {
				expectError(t, r, 404, "M_NOT_FOUND")
				return
			}
			if r.Status != 200 || r.Body["event_id"] != string(tc.want) {
				t.Fatalf("got %d %s, want %s", r.Status, r.Raw, tc.want)
			}
			i := slices.Index(evs, tc.want)
			if r.Body["origin_server_ts"] != float64(stamps[i]) {
				t.Fatalf("origin_server_ts = %v, want %d", r.Body["origin_server_ts"], stamps[i])
			}
		})
	}
	// The mautrix client agrees.
	resp, err := alice.TimestampToEvent(ctx, roomID, time.UnixMilli(stamps[0]+1), mautrix.DirectionForward)
	if err != nil || resp.EventID != evs[1] {
		t.Fatalf("TimestampToEvent = %+v, %v", resp, err)
	}

	// Carol joins after e0..e2 under "joined" history: she may see none
	// of them, so the search skips them both ways (to the room's first
	// events, from before the visibility was set, and to her join).
	if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"b", "f"} {
		r := find(carol, stamps[1], dir)
		if got, _ := r.Body["event_id"].(string); r.Status != 200 || slices.Contains(evs, id.EventID(got)) {
			t.Fatalf("carol, dir %s: %d %s", dir, r.Status, r.Raw)
		}
	}
}

func TestRelationsAccess(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	carol := registerUser(t, s, "carol")
	mallory := registerUser(t, s, "mallory")

	// Under "joined" history: bob sees the start of the room, then
	// leaves; carol joins late; mallory never joins.
	roomID := relRoom(t, alice, "joined", bob)
	early := text(t, alice, roomID, "early")
	earlyReaction := react(t, bob, roomID, early, "👋")
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	lateReaction := react(t, alice, roomID, early, "🎉")
	lateEdit := edit(t, alice, roomID, early, "early, edited after bob left")
	lateReply := threadReply(t, alice, roomID, early, "after bob left")
	late := text(t, alice, roomID, "late")
	if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	visibleToCarol := text(t, alice, roomID, "carol is here")

	otherRoom := relRoom(t, mallory, "")
	elsewhere := text(t, mallory, otherRoom, "elsewhere")

	rel := func(cli *mautrix.Client, ev id.EventID, query string) response {
		return do(t, "GET", v1URL(s, roomPath(roomID, "/relations/"+esc(ev)+query)), cli.AccessToken, nil)
	}
	contextOf := func(cli *mautrix.Client, ev id.EventID, query string) response {
		return do(t, "GET", clientURL(s, roomPath(roomID, "/context/"+esc(ev)+query)), cli.AccessToken, nil)
	}
	threadsOf := func(cli *mautrix.Client, query string) response {
		return do(t, "GET", v1URL(s, roomPath(roomID, "/threads"+query)), cli.AccessToken, nil)
	}
	tsOf := func(cli *mautrix.Client, query string) response {
		return do(t, "GET", v1URL(s, roomPath(roomID, "/timestamp_to_event"+query)), cli.AccessToken, nil)
	}
	for _, tc := range []struct {
		name    string
		resp    func() response
		status  int
		errcode string
	}{
		{"relations: non-member", func() response { return rel(mallory, early, "") }, 404, "M_NOT_FOUND"},
		{"relations: left user, event after leaving", func() response { return rel(bob, late, "") }, 404, "M_NOT_FOUND"},
		{"relations: invisible history", func() response { return rel(carol, early, "") }, 404, "M_NOT_FOUND"},
		{"relations: unknown event", func() response { return rel(alice, "$nope", "") }, 404, "M_NOT_FOUND"},
		{"relations: event of another room", func() response { return rel(alice, elsewhere, "") }, 404, "M_NOT_FOUND"},
		{"relations: unknown room", func() response {
			return do(t, "GET", v1URL(s, "/rooms/!nope:test.veche/relations/"+esc(early)), alice.AccessToken, nil)
		}, 404, "M_NOT_FOUND"},
		{"relations: bad dir", func() response { return rel(alice, early, "?dir=x") }, 400, "M_INVALID_PARAM"},
		{"relations: bad limit", func() response { return rel(alice, early, "?limit=ten") }, 400, "M_INVALID_PARAM"},
		{"relations: zero limit", func() response { return rel(alice, early, "?limit=0") }, 400, "M_INVALID_PARAM"},
		{"relations: bad recurse", func() response { return rel(alice, early, "?recurse=maybe") }, 400, "M_INVALID_PARAM"},
		{"relations: bad from", func() response { return rel(alice, early, "?from=garbage") }, 400, "M_INVALID_PARAM"},
		{"relations: bad to", func() response { return rel(alice, early, "?to=t1_x") }, 400, "M_INVALID_PARAM"},
		{"relations: no token", func() response {
			return do(t, "GET", v1URL(s, roomPath(roomID, "/relations/"+esc(early))), "", nil)
		}, 401, "M_MISSING_TOKEN"},
		{"context: non-member", func() response { return contextOf(mallory, early, "") }, 403, "M_FORBIDDEN"},
		{"context: left user, event after leaving", func() response { return contextOf(bob, late, "") }, 404, "M_NOT_FOUND"},
		{"context: invisible history", func() response { return contextOf(carol, early, "") }, 404, "M_NOT_FOUND"},
		{"context: event of another room", func() response { return contextOf(alice, elsewhere, "") }, 404, "M_NOT_FOUND"},
		{"context: bad filter", func() response { return contextOf(alice, early, "?filter=%7Bnot%20json") }, 400, "M_BAD_JSON"},
		{"context: bad limit", func() response { return contextOf(alice, early, "?limit=-1") }, 400, "M_INVALID_PARAM"},
		{"threads: non-member", func() response { return threadsOf(mallory, "") }, 403, "M_FORBIDDEN"},
		{"threads: bad include", func() response { return threadsOf(alice, "?include=some") }, 400, "M_INVALID_PARAM"},
		{"threads: bad limit", func() response { return threadsOf(alice, "?limit=0") }, 400, "M_INVALID_PARAM"},
		{"threads: bad from", func() response { return threadsOf(alice, "?from=xyz") }, 400, "M_INVALID_PARAM"},
		{"timestamp: non-member", func() response { return tsOf(mallory, "?ts=0&dir=f") }, 403, "M_FORBIDDEN"},
		{"timestamp: missing ts", func() response { return tsOf(alice, "?dir=f") }, 400, "M_MISSING_PARAM"},
		{"timestamp: bad ts", func() response { return tsOf(alice, "?ts=soon&dir=f") }, 400, "M_INVALID_PARAM"},
		{"timestamp: missing dir", func() response { return tsOf(alice, "?ts=0") }, 400, "M_MISSING_PARAM"},
		{"timestamp: bad dir", func() response { return tsOf(alice, "?ts=0&dir=up") }, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) { expectError(t, tc.resp(), tc.status, tc.errcode) })
	}

	// Bob, gone, still reads what he saw, without what came after.
	r := rel(bob, early, "")
	if r.Status != 200 {
		t.Fatalf("bob's relations of early: %d %s", r.Status, r.Raw)
	}
	var body struct {
		Chunk []rawEvent `json:"chunk"`
	}
	_ = json.Unmarshal(r.Raw, &body)
	if len(body.Chunk) != 1 || body.Chunk[0].EventID != earlyReaction {
		t.Fatalf("bob sees children %+v, want only %s", body.Chunk, earlyReaction)
	}
	var raw rawEvent
	getJSON(t, clientURL(s, roomPath(roomID, "/event/"+esc(early))), bob.AccessToken, &raw)
	if len(raw.Unsigned.Relations) != 0 {
		t.Fatalf("bob sees aggregations of events after he left: %s", raw.Unsigned.Relations)
	}
	if got := listThreads(t, s, bob, roomID, "", 10); len(got) != 0 {
		t.Fatalf("bob lists threads %v", got)
	}
	// Alice sees all of it.
	getJSON(t, clientURL(s, roomPath(roomID, "/event/"+esc(early))), alice.AccessToken, &raw)
	if !strings.Contains(string(raw.Unsigned.Relations["m.replace"]), string(lateEdit)) ||
		!strings.Contains(string(raw.Unsigned.Relations["m.thread"]), string(lateReply)) {
		t.Fatalf("alice's aggregations: %s", raw.Unsigned.Relations)
	}
	if got := listThreads(t, s, alice, roomID, "", 10); !slices.Equal(got, []id.EventID{early}) {
		t.Fatalf("alice lists threads %v", got)
	}
	// Carol may not see the root, so the thread is not hers to list.
	if got := listThreads(t, s, carol, roomID, "", 10); len(got) != 0 {
		t.Fatalf("carol lists threads %v", got)
	}
	c, err := carol.Context(ctx, roomID, visibleToCarol, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range c.EventsBefore {
		if e.ID == late || e.ID == early || e.ID == lateReaction {
			t.Fatalf("carol's context shows %s from before she joined", e.ID)
		}
	}
}

func TestThreadRootOfIgnoredUserIsRedacted(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	bob := registerUser(t, s, "bob")
	roomID := relRoom(t, alice, "", bob)
	root := text(t, bob, roomID, "secret root")
	threadReply(t, alice, roomID, root, "reply")
	threadReply(t, bob, roomID, root, "ignored reply")
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{
		"ignored_users": map[string]any{bob.UserID.String(): map[string]any{}},
	}); err != nil {
		t.Fatal(err)
	}
	r := do(t, "GET", v1URL(s, roomPath(roomID, "/threads")), alice.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	var p struct {
		Chunk []struct {
			EventID  id.EventID     `json:"event_id"`
			Content  map[string]any `json:"content"`
			Unsigned struct {
				Relations struct {
					Thread struct {
						Count int `json:"count"`
					} `json:"m.thread"`
				} `json:"m.relations"`
			} `json:"unsigned"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal(r.Raw, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Chunk) != 1 || p.Chunk[0].EventID != root || len(p.Chunk[0].Content) != 0 {
		t.Fatalf("threads = %s", r.Raw)
	}
	// The ignored user's reply is not counted either.
	if p.Chunk[0].Unsigned.Relations.Thread.Count != 1 {
		t.Fatalf("count = %d, want 1", p.Chunk[0].Unsigned.Relations.Thread.Count)
	}
}

func TestBundledReferences(t *testing.T) {
	t.Parallel()
	s, _ := startRelServer(t)
	alice := registerUser(t, s, "alice")
	roomID := relRoom(t, alice, "")
	target := text(t, alice, roomID, "referenced")
	ref := func() id.EventID {
		return send(t, alice, roomID, "org.example.note", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": target},
		})
	}
	one, two := ref(), ref()
	ev, err := alice.GetEvent(ctx, roomID, target)
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.Unsigned.Relations.GetReferences().GetEventIDs(); !slices.Equal(got, []id.EventID{one, two}) {
		t.Fatalf("m.reference chunk = %v, want %v", got, []id.EventID{one, two})
	}
}
