package syncapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

var ctx = context.Background()

const password = "correct horse battery"

func register(t *testing.T, s *testserver.Server, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.DefaultHTTPRetries = 0
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

// syncRaw calls /sync and decodes the answer generically, so that tests
// see exactly what the server sent.
func syncRaw(t *testing.T, cli *mautrix.Client, params map[string]string) map[string]any {
	t.Helper()
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	req, _ := http.NewRequest("GET", cli.HomeserverURL.String()+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("sync = %d %s", res.StatusCode, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sendTexts(t *testing.T, cli *mautrix.Client, room id.RoomID, n int, prefix string) []id.EventID {
	t.Helper()
	var ids []id.EventID
	for i := range n {
		resp, err := cli.SendText(ctx, room, fmt.Sprintf("%s %d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.EventID)
	}
	return ids
}

func bodies(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.EventMessage {
			_ = e.Content.ParseRaw(e.Type)
			out = append(out, e.Content.AsMessage().Body)
		}
	}
	return out
}

func TestInitialAndIncrementalSync(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Planning", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}

	// Bob sees the invite with stripped state.
	first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	inv := first.Rooms.Invite[room.RoomID]
	if inv == nil {
		t.Fatalf("invite missing: %+v", first.Rooms)
	}
	var sawName, sawInvite bool
	for _, e := range inv.State.Events {
		sawName = sawName || e.Type == event.StateRoomName
		sawInvite = sawInvite || (e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String())
	}
	if !sawName || !sawInvite {
		t.Fatalf("stripped state lacks name or the invite: %+v", inv.State.Events)
	}
	if len(first.Rooms.Join) != 0 {
		t.Fatalf("bob is in no room yet: %+v", first.Rooms.Join)
	}

	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	second, err := bob.SyncRequest(ctx, 0, first.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	jr := second.Rooms.Join[room.RoomID]
	if jr == nil {
		t.Fatalf("newly joined room missing: %+v", second.Rooms)
	}
	if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 2 {
		t.Fatalf("summary = %+v", jr.Summary)
	}

	// A long-poll returns as soon as Alice's message lands.
	done := make(chan *mautrix.RespSync, 1)
	go func() {
		r, err := bob.SyncRequest(ctx, 30000, second.NextBatch, "", false, "")
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	start := time.Now()
	if _, err := alice.SendText(ctx, room.RoomID, "agenda?"); err != nil {
		t.Fatal(err)
	}
	third := <-done
	if time.Since(start) > 20*time.Second {
		t.Fatal("long-poll was not woken by the message")
	}
	got := bodies(third.Rooms.Join[room.RoomID].Timeline.Events)
	if len(got) != 1 || got[0] != "agenda?" {
		t.Fatalf("incremental timeline = %v", got)
	}
	// Nothing new: a zero-timeout sync is empty and keeps the position.
	fourth, err := bob.SyncRequest(ctx, 0, third.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(fourth.Rooms.Join) != 0 || fourth.NextBatch != third.NextBatch {
		t.Fatalf("idle sync = %+v (next %s, was %s)", fourth.Rooms.Join, fourth.NextBatch, third.NextBatch)
	}
}

func TestLimitedTimelineAndPagination(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	initial, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	sent := sendTexts(t, alice, room.RoomID, 25, "msg")
	filter := `{"room":{"timeline":{"limit":5}}}`
	resp := syncRaw(t, alice, map[string]string{"since": initial.NextBatch, "filter": filter})
	tl := resp["rooms"].(map[string]any)["join"].(map[string]any)[string(room.RoomID)].(map[string]any)["timeline"].(map[string]any)
	events := tl["events"].([]any)
	if len(events) != 5 || tl["limited"] != true {
		t.Fatalf("timeline: %d events, limited=%v", len(events), tl["limited"])
	}
	if events[4].(map[string]any)["event_id"] != string(sent[24]) {
		t.Fatal("timeline does not end with the latest event")
	}
	if _, ok := events[0].(map[string]any)["room_id"]; ok {
		t.Fatal("sync timeline events must not carry room_id")
	}
	// Paginating back from prev_batch yields the rest, in order, once each.
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.(map[string]any)["event_id"].(string)] = true
	}
	from := tl["prev_batch"].(string)
	var older []string
	for from != "" {
		msgs, err := alice.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range msgs.Chunk {
			if seen[string(e.ID)] {
				t.Fatalf("event %s repeated", e.ID)
			}
			seen[string(e.ID)] = true
			older = append(older, string(e.ID))
		}
		from = msgs.End
	}
	for i, id := range sent {
		if !seen[string(id)] {
			t.Fatalf("message %d (%s) never seen", i, id)
		}
	}
	// Older events come newest first: sent[19] right before the timeline.
	if older[0] != string(sent[19]) {
		t.Fatalf("first older event = %s, want %s", older[0], sent[19])
	}
}

func TestLeaveAndRejoinSections(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	start, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 2, "before")
	if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 2, "after")
	resp, err := bob.SyncRequest(ctx, 0, start.NextBatch, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	left := resp.Rooms.Leave[room.RoomID]
	if left == nil || resp.Rooms.Join[room.RoomID] != nil {
		t.Fatalf("leave section = %+v, join = %+v", resp.Rooms.Leave, resp.Rooms.Join)
	}
	got := bodies(left.Timeline.Events)
	if len(got) != 2 || got[0] != "before 0" {
		t.Fatalf("left timeline = %v: must end at the leave", got)
	}
	// Initial syncs leave left rooms out unless asked.
	fresh := syncRaw(t, bob, nil)
	if len(fresh["rooms"].(map[string]any)["leave"].(map[string]any)) != 0 {
		t.Fatal("initial sync lists left rooms without include_leave")
	}
	withLeave := syncRaw(t, bob, map[string]string{"filter": `{"room":{"include_leave":true}}`})
	if withLeave["rooms"].(map[string]any)["leave"].(map[string]any)[string(room.RoomID)] == nil {
		t.Fatal("include_leave did not list the left room")
	}
}

func TestHistoryVisibilityInSync(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 3, "secret")
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 1, "visible")
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	got := bodies(resp.Rooms.Join[room.RoomID].Timeline.Events)
	if len(got) != 1 || got[0] != "visible 0" {
		t.Fatalf("bob sees %v; history before his join is 'joined'-only", got)
	}
	msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies(msgs.Chunk) {
		if b != "visible 0" {
			t.Fatalf("/messages leaked %q", b)
		}
	}
}

func TestLazyLoadingAndAccountData(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var others []*mautrix.Client
	for i := range 4 {
		c := register(t, s, fmt.Sprintf("member%d", i))
		if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		others = append(others, c)
	}
	sendTexts(t, alice, room.RoomID, 12, "chat")
	sendTexts(t, others[2], room.RoomID, 1, "hi")
	if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	resp := syncRaw(t, alice, map[string]string{"filter": `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`})
	jr := resp["rooms"].(map[string]any)["join"].(map[string]any)[string(room.RoomID)].(map[string]any)
	members := map[string]bool{}
	for _, e := range jr["state"].(map[string]any)["events"].([]any) {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.member" {
			members[ev["state_key"].(string)] = true
		}
	}
	if !members[string(alice.UserID)] || !members[string(others[2].UserID)] || members[string(others[0].UserID)] {
		t.Fatalf("lazy-loaded members = %v: want alice and member2 only", members)
	}
	var sawSettings bool
	for _, e := range resp["account_data"].(map[string]any)["events"].([]any) {
		sawSettings = sawSettings || e.(map[string]any)["type"] == "org.example.settings"
	}
	if !sawSettings {
		t.Fatalf("account data missing: %v", resp["account_data"])
	}
}

func TestSyncErrors(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	for _, params := range []string{"since=garbage", "timeout=-5", "full_state=maybe", "filter=%7Bbad", "filter=999"} {
		req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/sync?"+params, nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 400 && res.StatusCode != 404 {
			t.Errorf("sync?%s = %d, want a 4xx Matrix error", params, res.StatusCode)
		}
	}
	res, err := http.Get(s.URL + "/_matrix/client/v3/sync")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("unauthenticated sync = %d", res.StatusCode)
	}
}

func joined(t *testing.T, resp map[string]any, room id.RoomID) map[string]any {
	t.Helper()
	jr, _ := resp["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)
	return jr
}

func ephemeralTypes(jr map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	if jr == nil {
		return out
	}
	for _, e := range jr["ephemeral"].(map[string]any)["events"].([]any) {
		ev := e.(map[string]any)
		out[ev["type"].(string)] = ev["content"].(map[string]any)
	}
	return out
}

func TestTypingReceiptsAndUnreadCounts(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	start := syncRaw(t, bob, nil)
	since := start["next_batch"].(string)

	// Typing wakes a waiting sync and shows up as m.typing.
	done := make(chan map[string]any, 1)
	go func() { done <- syncRaw(t, bob, map[string]string{"since": since, "timeout": "30000"}) }()
	if _, err := alice.UserTyping(ctx, room.RoomID, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	resp := <-done
	typing := ephemeralTypes(joined(t, resp, room.RoomID))["m.typing"]
	if typing == nil || len(typing["user_ids"].([]any)) != 1 || typing["user_ids"].([]any)[0] != string(alice.UserID) {
		t.Fatalf("typing = %v", typing)
	}
	since = resp["next_batch"].(string)

	// Messages from alice count as unread for bob until he reads them.
	ids := sendTexts(t, alice, room.RoomID, 3, "unread")
	resp = syncRaw(t, bob, map[string]string{"since": since})
	jr := joined(t, resp, room.RoomID)
	if n := jr["unread_notifications"].(map[string]any)["notification_count"]; n != float64(3) {
		t.Fatalf("notification_count = %v, want 3", n)
	}
	since = resp["next_batch"].(string)
	if err := bob.SendReceipt(ctx, room.RoomID, ids[2], event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	resp = syncRaw(t, bob, map[string]string{"since": since})
	jr = joined(t, resp, room.RoomID)
	receipt := ephemeralTypes(jr)["m.receipt"]
	if receipt == nil || receipt[string(ids[2])] == nil {
		t.Fatalf("receipt missing: %v", ephemeralTypes(jr))
	}
	if n := jr["unread_notifications"].(map[string]any)["notification_count"]; n != float64(0) {
		t.Fatalf("notification_count after reading = %v, want 0", n)
	}
	// Alice sees bob's public receipt too.
	aliceSync := syncRaw(t, alice, nil)
	if ephemeralTypes(joined(t, aliceSync, room.RoomID))["m.receipt"] == nil {
		t.Fatal("initial sync lacks the room's receipts")
	}
}

func TestIgnoredUsersAreHidden(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	mallory := register(t, s, "mallory")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, mallory} {
		if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	if err := bob.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(mallory.UserID): map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, mallory, room.RoomID, 2, "spam")
	sendTexts(t, alice, room.RoomID, 1, "real")
	other, err := mallory.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies(resp.Rooms.Join[room.RoomID].Timeline.Events) {
		if b != "real 0" {
			t.Fatalf("bob sees %q from an ignored user", b)
		}
	}
	if resp.Rooms.Invite[other.RoomID] != nil {
		t.Fatal("invite from an ignored user shown")
	}
}

func TestPushRulesInSync(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	resp := syncRaw(t, alice, nil)
	var rules map[string]any
	for _, e := range resp["account_data"].(map[string]any)["events"].([]any) {
		if ev := e.(map[string]any); ev["type"] == "m.push_rules" {
			rules = ev["content"].(map[string]any)
		}
	}
	if rules == nil {
		t.Fatal("initial sync lacks m.push_rules")
	}
	override := rules["global"].(map[string]any)["override"].([]any)
	if len(override) == 0 || override[0].(map[string]any)["rule_id"] != ".m.rule.master" {
		t.Fatalf("default override rules = %v", override)
	}
}

func TestUnreadCountsFollowPushRules(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	since := syncRaw(t, bob, nil)["next_batch"].(string)
	send := func(content map[string]any) {
		if _, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]any{"msgtype": "m.text", "body": "plain"})
	send(map[string]any{"msgtype": "m.notice", "body": "a bot notice"})
	send(map[string]any{"msgtype": "m.text", "body": "hey bob", "m.mentions": map[string]any{"user_ids": []string{string(bob.UserID)}}})
	counts := func(since string) map[string]any {
		resp := syncRaw(t, bob, map[string]string{"since": since})
		return joined(t, resp, room.RoomID)["unread_notifications"].(map[string]any)
	}
	c := counts(since)
	// The notice does not notify (.m.rule.suppress_notices); the mention
	// notifies and highlights (.m.rule.is_user_mention).
	if c["notification_count"] != float64(2) || c["highlight_count"] != float64(1) {
		t.Fatalf("counts = %v, want 2 notifications, 1 highlight", c)
	}
	// Counts follow the rules as they are now: with the mention rule off,
	// mentions are plain messages (.m.rule.message).
	if err := bob.SetPushRuleEnabled(ctx, "global", "override", ".m.rule.is_user_mention", false); err != nil {
		t.Fatal(err)
	}
	send(map[string]any{"msgtype": "m.text", "body": "bob again", "m.mentions": map[string]any{"user_ids": []string{string(bob.UserID)}}})
	c = counts(since)
	if c["notification_count"] != float64(3) || c["highlight_count"] != float64(0) {
		t.Fatalf("counts after disabling mentions = %v, want 3 notifications, no highlight", c)
	}
}

func TestDepartedUserSeesSharedHistoryAndOwnBan(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 1, "one")
	if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 1, "while away")
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 1, "two")
	if _, err := alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	sendTexts(t, alice, room.RoomID, 1, "after ban")

	msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	sawBan := false
	for _, e := range msgs.Chunk {
		if b, ok := e.Content.Raw["body"].(string); ok {
			got[b] = true
		}
		if e.Type == event.StateMember && e.StateKey != nil && *e.StateKey == string(bob.UserID) && e.Content.Raw["membership"] == "ban" {
			sawBan = true
		}
	}
	// Shared history: what was said while bob was away is visible, since
	// he joined again later; nothing after the ban is.
	if !got["one 0"] || !got["while away 0"] || !got["two 0"] || got["after ban 0"] || !sawBan {
		t.Fatalf("bob sees %v (ban shown: %v)", got, sawBan)
	}
	withLeave := syncRaw(t, bob, map[string]string{"filter": `{"room":{"include_leave":true}}`})
	left := withLeave["rooms"].(map[string]any)["leave"].(map[string]any)[string(room.RoomID)].(map[string]any)
	events := left["timeline"].(map[string]any)["events"].([]any)
	last := events[len(events)-1].(map[string]any)
	if last["type"] != "m.room.member" || last["content"].(map[string]any)["membership"] != "ban" {
		t.Fatalf("the left room's timeline ends with %v, want bob's ban", last)
	}
}
