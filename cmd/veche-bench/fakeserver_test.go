package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/veche/veche/internal/signingkey"
)

// TestFakeServer walks the fake resident server through a join the way
// a homeserver would, and checks the answers around it.
func TestFakeServer(t *testing.T) {
	f, err := newFakeServer("big.bench", fakeRoom{Members: 20, State: 40, Version: gomatrixserverlib.RoomVersionV12, Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if f.stateCount() != 40 {
		t.Fatalf("state %d, want 40", f.stateCount())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.listen(ln); err != nil {
		t.Fatal(err)
	}
	defer f.close()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + ln.Addr().String()
	call := func(method, path string, body []byte, wantStatus int, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != wantStatus {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, data, wantStatus)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
	}

	var keys gomatrixserverlib.ServerKeys
	call("GET", "/_matrix/key/v2/server", nil, 200, &keys)
	if checks, _ := gomatrixserverlib.CheckKeys("big.bench", time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("key response fails its checks: %+v", checks)
	}

	room := url.PathEscape(f.roomID)
	joiner := "@joiner:other.test"
	call("GET", "/_matrix/federation/v1/make_join/"+room+"/"+url.PathEscape(joiner)+"?ver=1", nil, 400, nil)
	call("GET", "/_matrix/federation/v1/make_join/"+url.PathEscape("!nope:x")+"/"+url.PathEscape(joiner)+"?ver=12", nil, 404, nil)
	var made fclient.RespMakeJoin
	call("GET", "/_matrix/federation/v1/make_join/"+room+"/"+url.PathEscape(joiner)+"?ver=11&ver=12", nil, 200, &made)
	if made.RoomVersion != gomatrixserverlib.RoomVersionV12 || made.JoinEvent.RoomID != f.roomID || *made.JoinEvent.StateKey != joiner {
		t.Fatalf("template %+v", made)
	}

	// The joining server signs the template with its own key.
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	join, err := f.version.NewEventBuilderFromProtoEvent(&made.JoinEvent).Build(time.Now(), "other.test", key.ID, key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var sj fclient.RespSendJoin
	call("PUT", "/_matrix/federation/v2/send_join/"+room+"/"+url.PathEscape(join.EventID()), join.JSON(), 200, &sj)
	if len(sj.StateEvents) != 40 || len(sj.AuthEvents) == 0 || sj.Origin != "big.bench" {
		t.Fatalf("send_join: %d state, %d auth, origin %q", len(sj.StateEvents), len(sj.AuthEvents), sj.Origin)
	}
	// The answer is a consistent room: every event parses, is signed by
	// the fake, and passes the auth rules against the state.
	auth, _ := gomatrixserverlib.NewAuthEvents(nil)
	var state []gomatrixserverlib.PDU
	for _, raw := range sj.StateEvents {
		ev, err := f.version.NewEventFromUntrustedJSON(raw)
		if err != nil || ev.Redacted() {
			t.Fatalf("state event: %v", err)
		}
		state = append(state, ev)
		_ = auth.AddEvent(ev)
	}
	if err := gomatrixserverlib.Allowed(join, auth, userIDForSender); err != nil {
		t.Errorf("the join is not allowed by the state it was given: %v", err)
	}
	if tj, err := f.lastJoin(); err != nil || tj.answerBytes == 0 || tj.sendJoinDone.Before(tj.makeJoin) {
		t.Errorf("join timings %+v, %v", tj, err)
	}

	var ev struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	call("GET", "/_matrix/federation/v1/event/"+url.PathEscape(join.EventID()), nil, 200, &ev)
	if len(ev.PDUs) != 1 {
		t.Errorf("event: %d pdus", len(ev.PDUs))
	}
	call("GET", "/_matrix/federation/v1/event/"+url.PathEscape("$nope"), nil, 404, nil)
	var ids struct {
		PDUIDs  []string `json:"pdu_ids"`
		AuthIDs []string `json:"auth_chain_ids"`
	}
	call("GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(join.EventID()), nil, 200, &ids)
	if len(ids.PDUIDs) != 40 || len(ids.AuthIDs) == 0 {
		t.Errorf("state_ids: %d state, %d auth", len(ids.PDUIDs), len(ids.AuthIDs))
	}
	call("GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(state[0].EventID()), nil, 404, nil)
	var full struct {
		PDUs  []json.RawMessage `json:"pdus"`
		Chain []json.RawMessage `json:"auth_chain"`
	}
	call("GET", "/_matrix/federation/v1/state/"+room+"?event_id="+url.QueryEscape(join.EventID()), nil, 200, &full)
	if len(full.PDUs) != 40 || len(full.Chain) != len(ids.AuthIDs) {
		t.Errorf("state: %d state, %d auth", len(full.PDUs), len(full.Chain))
	}
	var missing struct {
		Events []json.RawMessage `json:"events"`
	}
	call("POST", "/_matrix/federation/v1/get_missing_events/"+room, []byte(`{}`), 200, &missing)
	var txn fclient.RespSend
	call("PUT", "/_matrix/federation/v1/send/1", []byte(`{"pdus":[{}],"edus":[]}`), 200, &txn)
	if f.pdus.Load() != 1 {
		t.Errorf("pdus received %d", f.pdus.Load())
	}
	var unknown struct {
		ErrCode string `json:"errcode"`
	}
	call("GET", "/_matrix/federation/v1/query/profile", nil, 404, &unknown)
	if unknown.ErrCode != "M_UNRECOGNIZED" {
		t.Errorf("unknown route errcode %q", unknown.ErrCode)
	}
}
