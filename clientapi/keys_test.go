package clientapi_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/veche/veche/internal/testkeys"
	"github.com/veche/veche/internal/testserver"
)

// keysClient is a logged-in device with its key identity.
type keysClient struct {
	*mautrix.Client
	dev *testkeys.Device
}

func withKeys(cli *mautrix.Client) *keysClient {
	return &keysClient{Client: cli, dev: testkeys.NewDevice(string(cli.UserID), string(cli.DeviceID))}
}

// call sends a raw request with the client's token and fails the test on
// an unexpected status.
func (c *keysClient) call(t *testing.T, s *testserver.Server, method, path string, body any, want int) response {
	t.Helper()
	r := do(t, method, clientURL(s, path), c.AccessToken, body)
	if r.Status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Raw, want)
	}
	return r
}

// syncOnce does one /sync, returning the raw body.
func syncOnce(t *testing.T, s *testserver.Server, token, since string, timeoutMS int) map[string]any {
	t.Helper()
	q := url.Values{"timeout": {itoa(timeoutMS)}}
	if since != "" {
		q.Set("since", since)
	}
	r := do(t, "GET", clientURL(s, "/sync?"+q.Encode()), token, nil)
	if r.Status != 200 {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	return r.Body
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// deviceLists returns device_lists.changed and .left of a sync body.
func deviceLists(body map[string]any) (changed, left []string) {
	dl, _ := body["device_lists"].(map[string]any)
	for _, v := range dl["changed"].([]any) {
		changed = append(changed, v.(string))
	}
	for _, v := range dl["left"].([]any) {
		left = append(left, v.(string))
	}
	return changed, left
}

// path digs into a decoded JSON value.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestKeysUploadQueryClaim(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := withKeys(registerUser(t, s, "alice"))
	phone := withKeys(login(t, s, "alice", testPassword))
	bob := withKeys(registerUser(t, s, "bob"))
	carol := withKeys(registerUser(t, s, "carol"))
	roomID, _ := sharedRoom(t, alice.Client, bob.Client)
	_ = roomID

	bobSince := syncOnce(t, s, bob.AccessToken, "", 0)["next_batch"].(string)
	carolSince := syncOnce(t, s, carol.AccessToken, "", 0)["next_batch"].(string)

	// Upload: device keys, two one-time keys and a fallback key.
	up := alice.call(t, s, "POST", "/keys/upload", map[string]any{
		"device_keys": alice.dev.DeviceKeys(), "one_time_keys": alice.dev.OneTimeKeys("A", 2),
		"fallback_keys": alice.dev.FallbackKey("F1"),
	}, 200)
	if n := path(up.Body, "one_time_key_counts", "signed_curve25519"); n != 2.0 {
		t.Fatalf("counts after upload: %s", up.Raw)
	}
	// The same keys again change nothing; a different key under a taken ID
	// is refused.
	again := alice.call(t, s, "POST", "/keys/upload", map[string]any{"device_keys": alice.dev.DeviceKeys()}, 200)
	if n := path(again.Body, "one_time_key_counts", "signed_curve25519"); n != 2.0 {
		t.Fatalf("counts after an empty upload: %s", again.Raw)
	}
	expectError(t, do(t, "POST", clientURL(s, "/keys/upload"), alice.AccessToken,
		map[string]any{"one_time_keys": alice.dev.OneTimeKeys("A", 1)}), 400, "M_INVALID_PARAM")
	// Keys of another user or device, or with a bad signature, are refused.
	expectError(t, do(t, "POST", clientURL(s, "/keys/upload"), alice.AccessToken,
		map[string]any{"device_keys": phone.dev.DeviceKeys()}), 400, "M_INVALID_PARAM")
	forged := alice.dev.DeviceKeys()
	forged["keys"].(map[string]any)["curve25519:"+alice.dev.DeviceID] = "bm90IHRoZSBrZXk"
	expectError(t, do(t, "POST", clientURL(s, "/keys/upload"), alice.AccessToken,
		map[string]any{"device_keys": forged}), 400, "M_INVALID_SIGNATURE")
	expectError(t, do(t, "POST", clientURL(s, "/keys/upload"), alice.AccessToken,
		map[string]any{"one_time_keys": map[string]any{"no-colon": "x"}}), 400, "M_INVALID_PARAM")

	if err := phone.SetDeviceInfo(ctx, phone.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Alice's phone"}); err != nil {
		t.Fatal(err)
	}
	phone.call(t, s, "POST", "/keys/upload", map[string]any{
		"device_keys": phone.dev.DeviceKeys(), "one_time_keys": phone.dev.OneTimeKeys("P", 1),
	}, 200)

	// Query: both of Alice's devices, self-signed, with display names.
	q := bob.call(t, s, "POST", "/keys/query", map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}}}, 200)
	devices, _ := path(q.Body, "device_keys", string(alice.UserID)).(map[string]any)
	if len(devices) != 2 {
		t.Fatalf("query: %s", q.Raw)
	}
	for _, d := range []*testkeys.Device{alice.dev, phone.dev} {
		got := devices[d.DeviceID]
		if err := testkeys.Verify(got, d.UserID, d.KeyID(), d.Ed25519.Pub); err != nil {
			t.Fatalf("device %s keys do not verify: %v (%v)", d.DeviceID, err, got)
		}
	}
	if name := path(devices[phone.dev.DeviceID], "unsigned", "device_display_name"); name != "Alice's phone" {
		t.Fatalf("phone's display name: %v", devices[phone.dev.DeviceID])
	}
	one := bob.call(t, s, "POST", "/keys/query", map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{phone.dev.DeviceID}}}, 200)
	if d, _ := path(one.Body, "device_keys", string(alice.UserID)).(map[string]any); len(d) != 1 || d[phone.dev.DeviceID] == nil {
		t.Fatalf("query of one device: %s", one.Raw)
	}
	expectError(t, do(t, "POST", clientURL(s, "/keys/query"), bob.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")

	// Claim: the two one-time keys, then the fallback key, which stays.
	claim := func(device string) map[string]any {
		t.Helper()
		r := bob.call(t, s, "POST", "/keys/claim", map[string]any{"one_time_keys": map[string]any{
			string(alice.UserID): map[string]string{device: "signed_curve25519"}}}, 200)
		keys, _ := path(r.Body, "one_time_keys", string(alice.UserID), device).(map[string]any)
		return keys
	}
	seen := map[string]bool{}
	for range 2 {
		k := claim(alice.dev.DeviceID)
		if len(k) != 1 {
			t.Fatalf("claim: %v", k)
		}
		for id, v := range k {
			if seen[id] || path(v, "fallback") != nil {
				t.Fatalf("claimed %s twice or a fallback key too early: %v", id, k)
			}
			seen[id] = true
			if err := testkeys.Verify(v, alice.dev.UserID, alice.dev.KeyID(), alice.dev.Ed25519.Pub); err != nil {
				t.Fatalf("claimed key does not verify: %v", err)
			}
		}
	}
	sync := syncOnce(t, s, alice.AccessToken, "", 0)
	if n := path(sync, "device_one_time_keys_count", "signed_curve25519"); n != 0.0 {
		t.Fatalf("count after claiming all: %v", n)
	}
	if types := path(sync, "device_unused_fallback_key_types").([]any); len(types) != 1 || types[0] != "signed_curve25519" {
		t.Fatalf("fallback types before use: %v", types)
	}
	for range 2 {
		if k := claim(alice.dev.DeviceID); k["signed_curve25519:F1"] == nil {
			t.Fatalf("fallback key not handed out: %v", k)
		}
	}
	sync = syncOnce(t, s, alice.AccessToken, "", 0)
	if types := path(sync, "device_unused_fallback_key_types").([]any); len(types) != 0 {
		t.Fatalf("fallback types after use: %v", types)
	}
	// A new fallback key is unused again.
	alice.call(t, s, "POST", "/keys/upload", map[string]any{"fallback_keys": alice.dev.FallbackKey("F2")}, 200)
	sync = syncOnce(t, s, alice.AccessToken, "", 0)
	if types := path(sync, "device_unused_fallback_key_types").([]any); len(types) != 1 {
		t.Fatalf("fallback types after a new one: %v", types)
	}
	// The phone has no fallback key: once its one key is gone, nothing.
	if k := claim(phone.dev.DeviceID); len(k) != 1 {
		t.Fatalf("phone claim: %v", k)
	}
	if k := claim(phone.dev.DeviceID); k != nil {
		t.Fatalf("phone claim after exhaustion: %v", k)
	}

	// Device lists: Bob shares a room with Alice and sees her key changes;
	// Carol does not.
	body := syncOnce(t, s, bob.AccessToken, bobSince, 0)
	changed, _ := deviceLists(body)
	if !slices.Contains(changed, string(alice.UserID)) {
		t.Fatalf("bob's device_lists.changed: %v", changed)
	}
	kc := bob.call(t, s, "GET", "/keys/changes?from="+url.QueryEscape(bobSince)+"&to="+url.QueryEscape(body["next_batch"].(string)), nil, 200)
	if c := kc.Body["changed"].([]any); !slices.Contains(c, any(string(alice.UserID))) {
		t.Fatalf("keys/changes: %s", kc.Raw)
	}
	if changed, _ := deviceLists(syncOnce(t, s, carol.AccessToken, carolSince, 0)); slices.Contains(changed, string(alice.UserID)) {
		t.Fatalf("carol sees alice's changes: %v", changed)
	}
	expectError(t, do(t, "GET", clientURL(s, "/keys/changes"), bob.AccessToken, nil), 400, "M_MISSING_PARAM")
	expectError(t, do(t, "GET", clientURL(s, "/keys/changes?from=nonsense"), bob.AccessToken, nil), 400, "M_INVALID_PARAM")

	// Deleting a device removes its keys and is a change too.
	bobSince = body["next_batch"].(string)
	first := do(t, "POST", clientURL(s, "/delete_devices"), alice.AccessToken, map[string]any{"devices": []string{phone.dev.DeviceID}})
	alice.call(t, s, "POST", "/delete_devices", map[string]any{
		"devices": []string{phone.dev.DeviceID}, "auth": passwordAuth(first.Body["session"].(string), alice.UserID, testPassword)}, 200)
	body = syncOnce(t, s, bob.AccessToken, bobSince, 10000)
	if changed, _ := deviceLists(body); !slices.Contains(changed, string(alice.UserID)) {
		t.Fatalf("bob's device_lists.changed after a deletion: %v", changed)
	}
	q = bob.call(t, s, "POST", "/keys/query", map[string]any{"device_keys": map[string]any{string(alice.UserID): []string{}}}, 200)
	if devices, _ := path(q.Body, "device_keys", string(alice.UserID)).(map[string]any); len(devices) != 1 || devices[phone.dev.DeviceID] != nil {
		t.Fatalf("query after deletion: %s", q.Raw)
	}

	// Leaving the only shared room puts Bob in Alice's device_lists.left.
	aliceSince := syncOnce(t, s, alice.AccessToken, "", 0)["next_batch"].(string)
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if _, left := deviceLists(syncOnce(t, s, alice.AccessToken, aliceSince, 10000)); !slices.Contains(left, string(bob.UserID)) {
		t.Fatalf("alice's device_lists.left: %v", left)
	}
}

// TestDeviceListChangeWakesSync checks that a long-polling /sync returns
// when a user sharing a room uploads new device keys.
func TestDeviceListChangeWakesSync(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := withKeys(registerUser(t, s, "alice"))
	bob := withKeys(registerUser(t, s, "bob"))
	sharedRoom(t, alice.Client, bob.Client)
	since := syncOnce(t, s, bob.AccessToken, "", 0)["next_batch"].(string)
	done := make(chan map[string]any, 1)
	go func() {
		r := do(t, "GET", clientURL(s, "/sync?timeout=30000&since="+url.QueryEscape(since)), bob.AccessToken, nil)
		done <- r.Body
	}()
	alice.call(t, s, "POST", "/keys/upload", map[string]any{"device_keys": alice.dev.DeviceKeys()}, 200)
	body := <-done
	if changed, _ := deviceLists(body); !slices.Contains(changed, string(alice.UserID)) {
		t.Fatalf("woken sync: %v", body["device_lists"])
	}
}

func TestCrossSigning(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t)
	alice := withKeys(registerUser(t, s, "alice"))
	bob := withKeys(registerUser(t, s, "bob"))
	sharedRoom(t, alice.Client, bob.Client)
	alice.call(t, s, "POST", "/keys/upload", map[string]any{"device_keys": alice.dev.DeviceKeys()}, 200)
	aliceCS := testkeys.NewCrossSigning(string(alice.UserID))
	bobCS := testkeys.NewCrossSigning(string(bob.UserID))

	// A self-signing key not signed by the master key is refused.
	bad := aliceCS.Upload()
	bad["self_signing_key"] = testkeys.NewCrossSigning(string(alice.UserID)).SelfSigningKey()
	expectError(t, do(t, "POST", clientURL(s, "/keys/device_signing/upload"), alice.AccessToken, bad), 400, "M_INVALID_SIGNATURE")
	// Without a master key, nothing can be checked.
	expectError(t, do(t, "POST", clientURL(s, "/keys/device_signing/upload"), alice.AccessToken,
		map[string]any{"self_signing_key": aliceCS.SelfSigningKey()}), 400, "M_MISSING_PARAM")
	wrongUser := aliceCS.Upload()
	wrongUser["master_key"] = bobCS.MasterKey()
	expectError(t, do(t, "POST", clientURL(s, "/keys/device_signing/upload"), alice.AccessToken, wrongUser), 400, "M_INVALID_PARAM")

	// The first upload needs no password; the same keys again neither.
	alice.call(t, s, "POST", "/keys/device_signing/upload", aliceCS.Upload(), 200)
	alice.call(t, s, "POST", "/keys/device_signing/upload", aliceCS.Upload(), 200)
	bob.call(t, s, "POST", "/keys/device_signing/upload", bobCS.Upload(), 200)

	// Replacing them does.
	newCS := testkeys.NewCrossSigning(string(alice.UserID))
	challenge := do(t, "POST", clientURL(s, "/keys/device_signing/upload"), alice.AccessToken, newCS.Upload())
	if challenge.Status != 401 || challenge.Body["session"] == nil {
		t.Fatalf("replacing keys without auth: %d %s", challenge.Status, challenge.Raw)
	}
	withAuth := newCS.Upload()
	withAuth["auth"] = passwordAuth(challenge.Body["session"].(string), alice.UserID, "wrong password")
	if r := do(t, "POST", clientURL(s, "/keys/device_signing/upload"), alice.AccessToken, withAuth); r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password: %d %s", r.Status, r.Raw)
	}
	withAuth["auth"] = passwordAuth(challenge.Body["session"].(string), alice.UserID, testPassword)
	alice.call(t, s, "POST", "/keys/device_signing/upload", withAuth, 200)
	aliceCS = newCS

	// Everyone sees master and self-signing keys; the user-signing key only
	// its owner.
	query := func(c *keysClient, user string) map[string]any {
		t.Helper()
		return c.call(t, s, "POST", "/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}}, 200).Body
	}
	own := query(alice, string(alice.UserID))
	if path(own, "master_keys", string(alice.UserID)) == nil || path(own, "self_signing_keys", string(alice.UserID)) == nil ||
		path(own, "user_signing_keys", string(alice.UserID)) == nil {
		t.Fatalf("alice's own query: %v", own)
	}
	seen := query(bob, string(alice.UserID))
	if path(seen, "master_keys", string(alice.UserID)) == nil || path(seen, "user_signing_keys", string(alice.UserID)) != nil {
		t.Fatalf("bob's query of alice: %v", seen)
	}
	if pub := path(seen, "master_keys", string(alice.UserID), "keys", testkeys.KeyID(aliceCS.Master)); pub != aliceCS.Master.PubB64() {
		t.Fatalf("master key is not the replacement: %v", seen["master_keys"])
	}

	// Signatures: Alice's device by her self-signing key (everyone sees
	// it), Alice's master key by Bob's user-signing key (only Bob does).
	deviceKeys := path(own, "device_keys", string(alice.UserID), alice.dev.DeviceID).(map[string]any)
	aliceMaster := path(seen, "master_keys", string(alice.UserID)).(map[string]any)
	masterID := aliceCS.Master.PubB64()
	r := alice.call(t, s, "POST", "/keys/signatures/upload", map[string]any{
		string(alice.UserID): map[string]any{alice.dev.DeviceID: aliceCS.SignDevice(deviceKeys)}}, 200)
	if f := r.Body["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("failures: %s", r.Raw)
	}
	r = bob.call(t, s, "POST", "/keys/signatures/upload", map[string]any{
		string(alice.UserID): map[string]any{masterID: bobCS.SignUser(aliceMaster)}}, 200)
	if f := r.Body["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("failures: %s", r.Raw)
	}
	// A forged signature fails.
	forged := testkeys.NewCrossSigning(string(bob.UserID)).SignUser(aliceMaster)
	forged["signatures"].(map[string]any)[string(bob.UserID)] = map[string]any{testkeys.KeyID(bobCS.UserSigning): "AAAA"}
	r = bob.call(t, s, "POST", "/keys/signatures/upload", map[string]any{string(alice.UserID): map[string]any{masterID: forged}}, 200)
	if path(r.Body, "failures", string(alice.UserID), masterID, "errcode") != "M_INVALID_SIGNATURE" {
		t.Fatalf("forged signature: %s", r.Raw)
	}

	seen = query(bob, string(alice.UserID))
	dev := path(seen, "device_keys", string(alice.UserID), alice.dev.DeviceID)
	if err := testkeys.Verify(dev, string(alice.UserID), testkeys.KeyID(aliceCS.SelfSigning), aliceCS.SelfSigning.Pub); err != nil {
		t.Fatalf("self-signing signature on alice's device: %v (%v)", err, dev)
	}
	if err := testkeys.Verify(dev, string(alice.UserID), alice.dev.KeyID(), alice.dev.Ed25519.Pub); err != nil {
		t.Fatalf("device's own signature lost: %v", err)
	}
	if err := testkeys.Verify(path(seen, "master_keys", string(alice.UserID)), string(bob.UserID), testkeys.KeyID(bobCS.UserSigning), bobCS.UserSigning.Pub); err != nil {
		t.Fatalf("bob's signature of alice's master key: %v", err)
	}
	own = query(alice, string(alice.UserID))
	if path(own, "master_keys", string(alice.UserID), "signatures", string(bob.UserID)) != nil {
		t.Fatalf("alice sees bob's user-signing signature: %v", own["master_keys"])
	}
}
