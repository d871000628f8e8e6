package federation_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// forger builds events and transactions as server a.test would, with its
// real key or with an impostor's.
type forger struct {
	t      *testing.T
	a, b   *testserver.Server
	key    signingkey.Key
	roomID string
	ver    gomatrixserverlib.IRoomVersion
}

func (f *forger) event(key ed25519.PrivateKey, sender, typ string, content any) gomatrixserverlib.PDU {
	f.t.Helper()
	rs := f.b.Roomserver()
	room, err := rs.Room(bg, f.roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	ext, err := rs.Extremities(bg, room)
	if err != nil {
		f.t.Fatal(err)
	}
	state, err := rs.CurrentState(bg, room)
	if err != nil {
		f.t.Fatal(err)
	}
	var auth []string
	var depth int64
	for _, e := range state {
		switch {
		case e.Type() == "m.room.power_levels", e.Type() == "m.room.member" && *e.StateKey() == sender:
			auth = append(auth, e.EventID())
		}
		depth = max(depth, e.Depth())
	}
	raw, _ := json.Marshal(content)
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: f.roomID, Type: typ, Content: raw, PrevEvents: ext, AuthEvents: auth, Depth: depth + 10}
	ev, err := f.ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "a.test", f.key.ID, key)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

// send puts a transaction to b.test signed as a.test, with a raw body.
func (f *forger) send(txnID string, body []byte) (int, []byte) {
	f.t.Helper()
	req := fclient.NewFederationRequest("PUT", "a.test", "b.test", "/_matrix/federation/v1/send/"+txnID)
	if err := req.SetContent(json.RawMessage(body)); err != nil {
		// Malformed JSON cannot be signed as content; sign an empty body
		// and swap it in, which the signature check must catch first.
		return f.sendUnsignable(txnID, body)
	}
	if err := req.Sign("a.test", f.key.ID, f.key.PrivateKey); err != nil {
		f.t.Fatal(err)
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		f.t.Fatal(err)
	}
	return f.do(hr)
}

func (f *forger) sendUnsignable(txnID string, body []byte) (int, []byte) {
	hr, _ := http.NewRequest("PUT", "https://"+f.b.FederationAddr().String()+"/_matrix/federation/v1/send/"+txnID, bytes.NewReader(body))
	return f.do(hr)
}

func (f *forger) do(hr *http.Request) (int, []byte) {
	f.t.Helper()
	hr.URL.Scheme, hr.URL.Host = "https", f.b.FederationAddr().String()
	resp, err := insecureClient.Do(hr)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func txnJSON(origin string, pdus ...gomatrixserverlib.PDU) []byte {
	raws := []json.RawMessage{}
	for _, p := range pdus {
		raws = append(raws, p.JSON())
	}
	b, _ := json.Marshal(map[string]any{"origin": origin, "origin_server_ts": time.Now().UnixMilli(), "pdus": raws, "edus": []any{}})
	return b
}

func TestHostileTransactionsChangeNothing(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob := user(t, b, "bob")
	created, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	key, err := signingkey.Load(a.Config.Path(a.Config.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	room, _ := b.Roomserver().Room(bg, string(created.RoomID))
	f := &forger{t: t, a: a, b: b, key: key, roomID: string(created.RoomID), ver: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))}
	_, impostor, _ := ed25519.GenerateKey(rand.Reader)

	forged := f.event(impostor, "@alice:a.test", "m.room.message", map[string]any{"body": "forged"})
	stranger := f.event(key.PrivateKey, "@mallory:a.test", "m.room.message", map[string]any{"body": "not a member"})
	tooMany := make([]gomatrixserverlib.PDU, 51)
	for i := range tooMany {
		tooMany[i] = f.event(key.PrivateKey, "@alice:a.test", "m.room.message", map[string]any{"body": fmt.Sprint(i)})
	}

	cases := []struct {
		name       string
		body       []byte
		wantStatus int
		wantPDU    map[string]string // event ID → substring of its error ("" = accepted)
	}{
		{"bad signature", txnJSON("a.test", forged), 200, map[string]string{forged.EventID(): "signature"}},
		{"sender not in the room", txnJSON("a.test", stranger), 200, map[string]string{stranger.EventID(): "Rejected"}},
		{"origin differs from the signer", txnJSON("c.test", stranger), 403, nil},
		{"too many PDUs", txnJSON("a.test", tooMany...), 400, nil},
		{"not JSON", []byte("{nope"), 401, nil},
		{"JSON but not a transaction", []byte(`{"pdus": "many"}`), 400, nil},
	}
	for i, c := range cases {
		status, body := f.send(fmt.Sprint("hostile", i), c.body)
		if status != c.wantStatus {
			t.Fatalf("%s: status %d (%s), want %d", c.name, status, body, c.wantStatus)
		}
		if c.wantPDU == nil {
			continue
		}
		var resp struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatalf("%s: %s", c.name, body)
		}
		for id, want := range c.wantPDU {
			got, ok := resp.PDUs[id]
			if !ok || !bytes.Contains([]byte(got.Error), []byte(want)) || (want == "") != (got.Error == "") {
				t.Fatalf("%s: result for %s = %+v, want error containing %q (%s)", c.name, id, got, want, body)
			}
		}
	}
	// None of it reached bob.
	msgs, err := bob.Messages(bg, created.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range msgs.Chunk {
		if e.Type.Type == "m.room.message" {
			t.Fatalf("a hostile event reached the timeline: %s %v", e.ID, e.Content.Raw)
		}
	}

	// A retried transaction gets the same answer and is not processed
	// again (the forged event stays rejected, nothing is duplicated).
	good := f.event(key.PrivateKey, "@alice:a.test", "m.room.message", map[string]any{"body": "genuine"})
	s1, b1 := f.send("retry", txnJSON("a.test", good))
	s2, b2 := f.send("retry", txnJSON("a.test", good))
	if s1 != 200 || s2 != 200 || !bytes.Equal(b1, b2) {
		t.Fatalf("retry: %d %s / %d %s", s1, b1, s2, b2)
	}
	if ev, err := b.Roomserver().Event(bg, good.EventID()); err != nil || ev.StreamPos == 0 {
		t.Fatalf("the genuine event was not accepted: %+v %v", ev, err)
	}
	_ = spec.ServerName("")
}

// insecureClient talks to test servers' self-signed federation listeners.
var insecureClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
