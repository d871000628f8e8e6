package federation_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// fedDo sends a federation request signed by from's key to to and
// returns the status and body.
func fedDo(t *testing.T, from, to *testserver.Server, method, path string, body any) (int, gjson.Result) {
	t.Helper()
	key, err := signingkey.Load(from.Config.Path(from.Config.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	origin, dest := spec.ServerName(from.Config.ServerName), spec.ServerName(to.Config.ServerName)
	fr := fclient.NewFederationRequest(method, origin, dest, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(origin, key.ID, key.PrivateKey); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "https", to.Config.Listen.Federation
	req.Host = to.Config.Listen.Federation
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 20 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if !json.Valid(raw) {
		t.Fatalf("%s %s: not JSON: %s", method, path, raw)
	}
	return resp.StatusCode, gjson.ParseBytes(raw)
}

func sendText(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) string {
	t.Helper()
	resp, err := c.SendText(bg, roomID, body)
	if err != nil {
		t.Fatal(err)
	}
	return string(resp.EventID)
}

func esc(s string) string { return url.PathEscape(s) }

func bodyOf(pdu gjson.Result) string { return pdu.Get("content.body").Str }

// pduBodies lists content.body of PDUs (events without one give "").
func pduBodies(pdus gjson.Result) []string {
	var out []string
	for _, p := range pdus.Array() {
		out = append(out, bodyOf(p))
	}
	return out
}

func TestFederationReadEndpoints(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test", "c.test"})
	a, b, c := servers[0], servers[1], servers[2]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")

	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Reads"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	room := esc(string(roomID))
	var m []string
	for _, body := range []string{"m0", "m1", "m2", "m3", "m4"} {
		m = append(m, sendText(t, alice, roomID, body))
	}
	stateAtM2, err := alice.State(bg, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var stateIDs []string
	var createID string
	for _, byKey := range stateAtM2 {
		for _, e := range byKey {
			stateIDs = append(stateIDs, string(e.ID))
			if e.Type == event.StateCreate {
				createID = string(e.ID)
			}
		}
	}
	slices.Sort(stateIDs)
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	m = append(m, sendText(t, alice, roomID, "m5"))

	t.Run("event", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/event/"+esc(m[2]), nil)
		if status != 200 || resp.Get("origin").Str != "a.test" || !resp.Get("origin_server_ts").Exists() {
			t.Fatalf("%d %s", status, resp.Raw)
		}
		if pdus := resp.Get("pdus").Array(); len(pdus) != 1 || bodyOf(pdus[0]) != "m2" {
			t.Fatalf("pdus %s", resp.Get("pdus").Raw)
		}
	})
	t.Run("state_ids", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(m[2]), nil)
		if status != 200 {
			t.Fatalf("%d %s", status, resp.Raw)
		}
		var got []string
		for _, id := range resp.Get("pdu_ids").Array() {
			got = append(got, id.Str)
		}
		slices.Sort(got)
		if !slices.Equal(got, stateIDs) {
			t.Errorf("pdu_ids %v, want %v", got, stateIDs)
		}
		var chain []string
		for _, id := range resp.Get("auth_chain_ids").Array() {
			chain = append(chain, id.Str)
		}
		if !slices.Contains(chain, createID) {
			t.Errorf("auth_chain_ids %v lack the create event %s", chain, createID)
		}
		// /state has the same, as events.
		status, full := fedDo(t, b, a, "GET", "/_matrix/federation/v1/state/"+room+"?event_id="+url.QueryEscape(m[2]), nil)
		if status != 200 || len(full.Get("pdus").Array()) != len(got) || len(full.Get("auth_chain").Array()) != len(chain) {
			t.Errorf("state: %d, %d pdus, %d auth events", status, len(full.Get("pdus").Array()), len(full.Get("auth_chain").Array()))
		}
	})
	t.Run("event_auth", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/event_auth/"+room+"/"+esc(m[2]), nil)
		if status != 200 {
			t.Fatalf("%d %s", status, resp.Raw)
		}
		types := map[string]bool{}
		for _, e := range resp.Get("auth_chain").Array() {
			types[e.Get("type").Str] = true
		}
		for _, want := range []string{"m.room.create", "m.room.member", "m.room.power_levels"} {
			if !types[want] {
				t.Errorf("auth chain lacks %s: %s", want, resp.Raw)
			}
		}
	})
	t.Run("backfill", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/backfill/"+room+"?limit=3&v="+url.QueryEscape(m[4]), nil)
		if status != 200 || resp.Get("origin").Str != "a.test" {
			t.Fatalf("%d %s", status, resp.Raw)
		}
		if got := pduBodies(resp.Get("pdus")); !slices.Equal(got, []string{"m4", "m3", "m2"}) {
			t.Errorf("backfill bodies %v", got)
		}
	})
	t.Run("get_missing_events", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "POST", "/_matrix/federation/v1/get_missing_events/"+room,
			map[string]any{"earliest_events": []string{m[1]}, "latest_events": []string{m[4]}, "limit": 10})
		if status != 200 {
			t.Fatalf("%d %s", status, resp.Raw)
		}
		if got := pduBodies(resp.Get("events")); !slices.Equal(got, []string{"m2", "m3"}) {
			t.Errorf("missing events %v", got)
		}
		_, ev := fedDo(t, b, a, "GET", "/_matrix/federation/v1/event/"+esc(m[3]), nil)
		depth := ev.Get("pdus.0.depth").Int()
		_, resp = fedDo(t, b, a, "POST", "/_matrix/federation/v1/get_missing_events/"+room,
			map[string]any{"earliest_events": []string{}, "latest_events": []string{m[4]}, "min_depth": depth})
		if got := pduBodies(resp.Get("events")); !slices.Equal(got, []string{"m3"}) {
			t.Errorf("missing events from depth %d: %v", depth, got)
		}
	})
	t.Run("timestamp_to_event", func(t *testing.T) {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/timestamp_to_event/"+room+"?ts=0&dir=f", nil)
		if status != 200 || resp.Get("event_id").Str != createID || !resp.Get("origin_server_ts").Exists() {
			t.Errorf("first event: %d %s", status, resp.Raw)
		}
		status, resp = fedDo(t, b, a, "GET", "/_matrix/federation/v1/timestamp_to_event/"+room+"?ts=99999999999999&dir=b", nil)
		if status != 200 || resp.Get("event_id").Str != m[5] {
			t.Errorf("last event: %d %s, want %s", status, resp.Raw, m[5])
		}
	})

	refusals := []struct {
		name         string
		from         *testserver.Server
		method, path string
		body         any
		status       int
		errcode      string
	}{
		{"unknown event", b, "GET", "/_matrix/federation/v1/event/" + esc("$nope"), nil, 404, "M_NOT_FOUND"},
		{"state_ids of an unknown event", b, "GET", "/_matrix/federation/v1/state_ids/" + room + "?event_id=%24nope", nil, 404, "M_NOT_FOUND"},
		{"state_ids without event_id", b, "GET", "/_matrix/federation/v1/state_ids/" + room, nil, 400, "M_MISSING_PARAM"},
		{"state of an unknown room", b, "GET", "/_matrix/federation/v1/state/" + esc("!nope:a.test") + "?event_id=" + url.QueryEscape(m[2]), nil, 404, "M_NOT_FOUND"},
		{"event_auth of an unknown event", b, "GET", "/_matrix/federation/v1/event_auth/" + room + "/" + esc("$nope"), nil, 404, "M_NOT_FOUND"},
		{"backfill without v", b, "GET", "/_matrix/federation/v1/backfill/" + room + "?limit=3", nil, 400, "M_MISSING_PARAM"},
		{"backfill without limit", b, "GET", "/_matrix/federation/v1/backfill/" + room + "?v=" + url.QueryEscape(m[4]), nil, 400, "M_MISSING_PARAM"},
		{"get_missing_events without latest_events", b, "POST", "/_matrix/federation/v1/get_missing_events/" + room, map[string]any{"earliest_events": []string{}}, 400, "M_BAD_JSON"},
		{"timestamp_to_event without dir", b, "GET", "/_matrix/federation/v1/timestamp_to_event/" + room + "?ts=0", nil, 400, "M_MISSING_PARAM"},
		{"timestamp_to_event after the end", b, "GET", "/_matrix/federation/v1/timestamp_to_event/" + room + "?ts=99999999999999&dir=f", nil, 404, "M_NOT_FOUND"},
		{"event, server not in room", c, "GET", "/_matrix/federation/v1/event/" + esc(m[2]), nil, 403, "M_FORBIDDEN"},
		{"state, server not in room", c, "GET", "/_matrix/federation/v1/state/" + room + "?event_id=" + url.QueryEscape(m[2]), nil, 403, "M_FORBIDDEN"},
		{"state_ids, server not in room", c, "GET", "/_matrix/federation/v1/state_ids/" + room + "?event_id=" + url.QueryEscape(m[2]), nil, 403, "M_FORBIDDEN"},
		{"event_auth, server not in room", c, "GET", "/_matrix/federation/v1/event_auth/" + room + "/" + esc(m[2]), nil, 403, "M_FORBIDDEN"},
		{"backfill, server not in room", c, "GET", "/_matrix/federation/v1/backfill/" + room + "?limit=3&v=" + url.QueryEscape(m[4]), nil, 403, "M_FORBIDDEN"},
		{"get_missing_events, server not in room", c, "POST", "/_matrix/federation/v1/get_missing_events/" + room,
			map[string]any{"earliest_events": []string{}, "latest_events": []string{m[4]}}, 403, "M_FORBIDDEN"},
		{"timestamp_to_event, server not in room", c, "GET", "/_matrix/federation/v1/timestamp_to_event/" + room + "?ts=0&dir=f", nil, 403, "M_FORBIDDEN"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			status, resp := fedDo(t, tt.from, a, tt.method, tt.path, tt.body)
			if status != tt.status || resp.Get("errcode").Str != tt.errcode {
				t.Errorf("got %d %s, want %d %s", status, resp.Raw, tt.status, tt.errcode)
			}
		})
	}

	// A server the room's ACL denies reads nothing, joined or not.
	if _, err := alice.SendStateEvent(bg, roomID, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"b.test"}}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/_matrix/federation/v1/event/" + esc(m[2]),
		"/_matrix/federation/v1/state_ids/" + room + "?event_id=" + url.QueryEscape(m[2]),
		"/_matrix/federation/v1/backfill/" + room + "?limit=3&v=" + url.QueryEscape(m[4]),
		"/_matrix/federation/v1/timestamp_to_event/" + room + "?ts=0&dir=f",
	} {
		status, resp := fedDo(t, b, a, "GET", path, nil)
		if status != 403 || resp.Get("errcode").Str != "M_FORBIDDEN" {
			t.Errorf("ACL-denied GET %s = %d %s", path, status, resp.Raw)
		}
	}
}

// TestFederationReadVisibility: under history_visibility "joined", a
// server whose users joined later gets the earlier events redacted (or
// left out where the DAG does not need them).
func TestFederationReadVisibility(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Secrets", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	room := esc(string(roomID))
	s0, s1 := sendText(t, alice, roomID, "secret 0"), sendText(t, alice, roomID, "secret 1")
	if _, err := bob.JoinRoom(bg, string(roomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	p0 := sendText(t, alice, roomID, "public 0")

	for id, want := range map[string]string{s0: "", s1: "", p0: "public 0"} {
		status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/event/"+esc(id), nil)
		if status != 200 || bodyOf(resp.Get("pdus.0")) != want {
			t.Errorf("event %s: %d body %q, want %q", id, status, bodyOf(resp.Get("pdus.0")), want)
		}
		if status == 200 && !resp.Get("pdus.0.signatures").Exists() {
			t.Errorf("redacted event %s lost its signatures", id)
		}
	}

	_, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/backfill/"+room+"?limit=4&v="+url.QueryEscape(p0), nil)
	pdus := resp.Get("pdus").Array()
	if len(pdus) != 4 || bodyOf(pdus[0]) != "public 0" || pdus[1].Get("type").Str != "m.room.member" ||
		pdus[2].Get("content").Raw != "{}" || pdus[3].Get("content").Raw != "{}" {
		t.Errorf("backfill across the join: %s", resp.Get("pdus").Raw)
	}

	_, resp = fedDo(t, b, a, "POST", "/_matrix/federation/v1/get_missing_events/"+room,
		map[string]any{"earliest_events": []string{}, "latest_events": []string{p0}, "limit": 50})
	for _, e := range resp.Get("events").Array() {
		if e.Get("type").Str == "m.room.message" || e.Get("type").Str == "m.room.name" {
			t.Errorf("get_missing_events hands out %s from before the join: %s", e.Get("type").Str, e.Raw)
		}
	}
	if len(resp.Get("events").Array()) == 0 {
		t.Error("get_missing_events left out everything, the room's creation too")
	}

	// The state at a secret event: the name is there, but not its content.
	status, resp := fedDo(t, b, a, "GET", "/_matrix/federation/v1/state/"+room+"?event_id="+url.QueryEscape(s1), nil)
	if status != 200 {
		t.Fatalf("state at a secret event: %d %s", status, resp.Raw)
	}
	named := false
	for _, e := range resp.Get("pdus").Array() {
		if e.Get("type").Str == "m.room.name" {
			named = true
			if e.Get("content.name").Exists() {
				t.Errorf("the name at a secret event is readable: %s", e.Raw)
			}
		}
	}
	if !named {
		t.Errorf("no name event in the state: %s", resp.Raw)
	}
	// timestamp_to_event passes over what b.test may not see, not over
	// the room's creation, which was shared.
	_, resp = fedDo(t, b, a, "GET", "/_matrix/federation/v1/timestamp_to_event/"+room+"?ts=0&dir=f", nil)
	if resp.Get("event_id").Str == "" {
		t.Errorf("timestamp_to_event finds nothing visible: %s", resp.Raw)
	}
}
