package federation_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// signedBy returns a small JSON object signed with k as server.
func signedBy(t *testing.T, server string, k signingkey.Key) []byte {
	t.Helper()
	raw, err := gomatrixserverlib.SignJSON(server, k.ID, k.PrivateKey, []byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// verify checks a signed JSON object with s's key ring, as of at.
func verify(t *testing.T, s *testserver.Server, server string, msg []byte, at time.Time) error {
	t.Helper()
	res, err := s.Federation().KeyRing().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: spec.ServerName(server), Message: msg, AtTS: spec.AsTimestamp(at),
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return res[0].Error
}

func TestServerKeys(t *testing.T) {
	t.Parallel()
	s := testserver.StartFederation(t, []string{"a.test"})[0]
	status, raw := rawGet(t, s, "/_matrix/key/v2/server")
	if status != 200 {
		t.Fatalf("GET /_matrix/key/v2/server: %d %s", status, raw)
	}
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	checks, ed := gomatrixserverlib.CheckKeys("a.test", now, keys)
	if !checks.AllChecksOK {
		t.Fatalf("CheckKeys: %+v", checks)
	}
	k := signingKeyOf(t, s)
	if string(ed[k.ID]) != string(k.Public()) || len(ed) != 1 {
		t.Errorf("verify_keys %v, want only %s", ed, k.ID)
	}
	if until := keys.ValidUntilTS.Time(); until.Before(now.Add(23*time.Hour)) || until.After(now.Add(25*time.Hour)) {
		t.Errorf("valid_until_ts %v, want about a day ahead", until)
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields)
	if string(fields["old_verify_keys"]) != "{}" {
		t.Errorf("old_verify_keys = %s, want {}", fields["old_verify_keys"])
	}
}

// A fetches B's keys over the real TLS listener, keeps them in its
// database, and still has them after a restart with B gone.
func TestKeyRingFetchesAndCaches(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	msg := signedBy(t, "b.test", signingKeyOf(t, b))
	if err := verify(t, a, "b.test", msg, time.Now()); err != nil {
		t.Fatalf("verifying B's signature on A: %v", err)
	}
	forged := signedBy(t, "b.test", signingKeyOf(t, a))
	if err := verify(t, a, "b.test", forged, time.Now()); err == nil {
		t.Error("A accepted a signature made with the wrong key")
	}
	// Its own signatures A checks without asking anyone.
	if err := verify(t, a, "a.test", signedBy(t, "a.test", signingKeyOf(t, a)), time.Now()); err != nil {
		t.Errorf("A's own signature: %v", err)
	}

	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	if err := verify(t, a, "b.test", msg, time.Now()); err != nil {
		t.Fatalf("after restart, with B down: %v", err)
	}
}

// notaryKeys checks a notary answer: every entry countersigned by the
// notary and valid for its server.
func notaryKeys(t *testing.T, raw []byte, notary string, notaryKey signingkey.Key) map[spec.ServerName]gomatrixserverlib.ServerKeys {
	t.Helper()
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || resp.ServerKeys == nil {
		t.Fatalf("notary answer %s: %v", raw, err)
	}
	out := map[spec.ServerName]gomatrixserverlib.ServerKeys{}
	for _, entry := range resp.ServerKeys {
		var keys gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(entry, &keys); err != nil {
			t.Fatal(err)
		}
		if err := gomatrixserverlib.VerifyJSON(notary, notaryKey.ID, notaryKey.Public(), entry); err != nil {
			t.Errorf("entry for %s lacks the notary's signature: %v", keys.ServerName, err)
		}
		if checks, _ := gomatrixserverlib.CheckKeys(keys.ServerName, time.Now(), keys); !checks.AllChecksOK {
			t.Errorf("entry for %s fails CheckKeys: %+v", keys.ServerName, checks)
		}
		out[keys.ServerName] = keys
	}
	return out
}

func TestNotary(t *testing.T) {
	t.Parallel()
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"}, testserver.WithConfig(func(c *config.Config) {
		if c.ServerName == "b.test" {
			c.Federation.Hosts["dead.test"] = "127.0.0.1:1"
		}
	}))
	a, b := servers[0], servers[1]
	bKey, aKey := signingKeyOf(t, b), signingKeyOf(t, a)

	// POST: A's keys (fetched for the query), B's own, and an unreachable
	// server (left out).
	cl := a.Federation().Client()
	req, _ := http.NewRequest("POST", "matrix://b.test/_matrix/key/v2/query", jsonBody(t, map[string]any{
		"server_keys": map[string]any{"a.test": map[string]any{}, "b.test": map[string]any{}, "dead.test": map[string]any{}},
	}))
	var raw json.RawMessage
	if err := cl.DoRequestAndParseResponse(ctx, req, &raw); err != nil {
		t.Fatal(err)
	}
	got := notaryKeys(t, raw, "b.test", bKey)
	if len(got) != 2 || got["a.test"].VerifyKeys[aKey.ID].Key == nil || got["b.test"].VerifyKeys[bKey.ID].Key == nil {
		t.Errorf("notary answered %s", raw)
	}

	// GET for one server, from the cache this time.
	status, body := rawGet(t, b, "/_matrix/key/v2/query/a.test?minimum_valid_until_ts=1")
	if status != 200 {
		t.Fatalf("GET query/a.test: %d %s", status, body)
	}
	if got := notaryKeys(t, body, "b.test", bKey); len(got) != 1 || got["a.test"].VerifyKeys[aKey.ID].Key == nil {
		t.Errorf("GET answered %s", body)
	}
	status, body = rawGet(t, b, "/_matrix/key/v2/query/dead.test")
	if status != 200 || string(body) != `{"server_keys":[]}` {
		t.Errorf("GET query/dead.test: %d %s", status, body)
	}
	status, body = rawGet(t, b, "/_matrix/key/v2/query/a.test?minimum_valid_until_ts=x")
	if status != 400 {
		t.Errorf("bad minimum_valid_until_ts: %d %s", status, body)
	}
}

// C cannot reach A and trusts B as a notary (perspective key fetcher).
func TestPerspectiveKeyFetcher(t *testing.T) {
	t.Parallel()
	var notaryKeyID, notaryPub string
	servers := testserver.StartFederation(t, []string{"a.test", "b.test", "c.test"}, testserver.WithConfig(func(c *config.Config) {
		switch c.ServerName {
		case "b.test":
			k, err := signingkey.Create(c.Path(c.SigningKeyPath))
			if err != nil {
				t.Fatal(err)
			}
			notaryKeyID, notaryPub = string(k.ID), base64.RawStdEncoding.EncodeToString(k.Public())
		case "c.test":
			c.Federation.Hosts["a.test"] = "127.0.0.1:1"
			c.Federation.TrustedKeyServers = []config.TrustedKeyServer{{ServerName: "b.test", VerifyKeys: map[string]string{notaryKeyID: notaryPub}}}
		}
	}))
	a, c := servers[0], servers[2]
	if err := verify(t, c, "a.test", signedBy(t, "a.test", signingKeyOf(t, a)), time.Now()); err != nil {
		t.Fatalf("C verifying A's signature through the notary: %v", err)
	}
}

// B rotated its key: the old one is listed in old_verify_keys, and what it
// signed before it expired still verifies on A, which never saw it as
// current; requests signed with it are refused.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	old, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	expired := time.Now().Add(-time.Hour)
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"}, testserver.WithConfig(func(c *config.Config) {
		if c.ServerName == "b.test" {
			c.OldSigningKeys = map[string]config.OldSigningKey{
				string(old.ID): {Key: base64.RawStdEncoding.EncodeToString(old.Public()), ExpiredTS: expired.UnixMilli()},
			}
		}
	}))
	a, b := servers[0], servers[1]
	createUser(t, b, "bob", "Bob")

	status, raw := rawGet(t, b, "/_matrix/key/v2/server")
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &keys); status != 200 || err != nil {
		t.Fatalf("%d %s %v", status, raw, err)
	}
	if ok := keys.OldVerifyKeys[old.ID]; string(ok.Key) != string(old.Public()) || ok.ExpiredTS != spec.AsTimestamp(expired) {
		t.Errorf("old_verify_keys = %+v", keys.OldVerifyKeys)
	}
	if _, listed := keys.VerifyKeys[old.ID]; listed || len(keys.VerifyKeys) != 1 {
		t.Errorf("verify_keys = %+v", keys.VerifyKeys)
	}

	// An event B signed with the old key while it was current.
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	sender := "@bob:b.test"
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: "!room:b.test", Type: "m.room.message", Depth: 5,
		PrevEvents: []string{}, AuthEvents: []string{},
	}
	if err := proto.SetContent(map[string]string{"msgtype": "m.text", "body": "before the rotation"}); err != nil {
		t.Fatal(err)
	}
	userIDForSender := func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return spec.NewUserID(string(s), true) }
	before, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(expired.Add(-time.Hour), "b.test", old.ID, old.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, before, a.Federation().KeyRing(), userIDForSender); err != nil {
		t.Errorf("event signed with the old key before it expired: %v", err)
	}
	after, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "b.test", old.ID, old.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, after, a.Federation().KeyRing(), userIDForSender); err == nil {
		t.Error("an event signed with the old key after it expired verified")
	}

	// Requests are checked as of now: the old key no longer signs them.
	r := send(t, a, fedRequest{method: "GET", uri: "/_matrix/federation/v1/query/profile?user_id=%40alice%3Aa.test",
		origin: "b.test", destination: "a.test", keyID: old.ID, key: old.PrivateKey})
	if r.status != 401 || r.errcode() != "M_UNAUTHORIZED" {
		t.Errorf("request signed with the old key: %d %s", r.status, r.raw)
	}
}

func jsonBody(t *testing.T, v any) *bytes.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}
