package federation_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/config"
	"github.com/veche/veche/internal/testkeys"
	"github.com/veche/veche/internal/testserver"
)

// keysCall sends a raw client API request under /_matrix/client/v3.
func keysCall(t *testing.T, c *mautrix.Client, method, path string, body any) map[string]any {
	t.Helper()
	var out map[string]any
	parts := []any{"v3"}
	for _, p := range strings.Split(path, "/") {
		parts = append(parts, p)
	}
	if _, err := c.MakeRequest(bg, method, c.BuildClientURL(parts...), body, &out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}

// dig walks decoded JSON.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func deviceOf(t *testing.T, c *mautrix.Client) *testkeys.Device {
	t.Helper()
	who, err := c.Whoami(bg)
	if err != nil {
		t.Fatal(err)
	}
	return testkeys.NewDevice(string(c.UserID), string(who.DeviceID))
}

// syncToken is the next_batch of an initial sync.
func syncToken(t *testing.T, c *mautrix.Client) string {
	t.Helper()
	resp, err := c.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	return resp.NextBatch
}

// waitDeviceListChange long-polls c's /sync from since until
// device_lists.changed names user, and returns the token after it.
func waitDeviceListChange(t *testing.T, c *mautrix.Client, since string, user id.UserID) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(bg, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if slices.Contains(resp.DeviceLists.Changed, user) {
			return since
		}
	}
	t.Fatalf("%s: timed out waiting for %s in device_lists.changed", c.UserID, user)
	return ""
}

func TestE2EEKeysOverFederation(t *testing.T) {
	t.Parallel()
	// dead.test never answers: queries of its users must fail alone.
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"}, testserver.WithConfig(func(c *config.Config) {
		c.Federation.Hosts["dead.test"] = "127.0.0.1:1"
	}))
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
	waitFor(t, alice, created.RoomID, "bob's join", isMember(bob.UserID, "join"))
	aliceDev, bobDev := deviceOf(t, alice), deviceOf(t, bob)
	aliceSince, bobSince := syncToken(t, alice), syncToken(t, bob)

	// Bob's keys reach a.test as a device list update, and Alice's sync
	// says so.
	keysCall(t, bob, "POST", "keys/upload", map[string]any{
		"device_keys": bobDev.DeviceKeys(), "one_time_keys": bobDev.OneTimeKeys("B", 1), "fallback_keys": bobDev.FallbackKey("BF"),
	})
	aliceSince = waitDeviceListChange(t, alice, aliceSince, bob.UserID)

	// Alice queries them through a.test, which asks b.test.
	q := keysCall(t, alice, "POST", "keys/query", map[string]any{"device_keys": map[string]any{
		string(bob.UserID): []string{}, "@x:dead.test": []string{}}, "timeout": 3000})
	got := dig(q, "device_keys", string(bob.UserID), bobDev.DeviceID)
	if err := testkeys.Verify(got, bobDev.UserID, bobDev.KeyID(), bobDev.Ed25519.Pub); err != nil {
		t.Fatalf("bob's device keys over federation: %v (%v)", err, q)
	}
	if dig(q, "failures", "dead.test") == nil {
		t.Fatalf("no failure for an unreachable server: %v", q["failures"])
	}

	// Claims: the one-time key, then the fallback key.
	claim := func() map[string]any {
		t.Helper()
		r := keysCall(t, alice, "POST", "keys/claim", map[string]any{"one_time_keys": map[string]any{
			string(bob.UserID): map[string]string{bobDev.DeviceID: "signed_curve25519"}}})
		k, _ := dig(r, "one_time_keys", string(bob.UserID), bobDev.DeviceID).(map[string]any)
		return k
	}
	if k := claim(); k["signed_curve25519:B0"] == nil {
		t.Fatalf("first claim: %v", k)
	}
	if k := claim(); k["signed_curve25519:BF"] == nil {
		t.Fatalf("second claim: %v", k)
	}
	bobSync, err := bob.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if len(bobSync.FallbackKeys) != 0 || bobSync.DeviceOTKCount.SignedCurve25519 != 0 {
		t.Fatalf("bob's counts after the claims: %+v %v", bobSync.DeviceOTKCount, bobSync.FallbackKeys)
	}

	// Cross-signing keys travel as a signing key update and are queried
	// over federation; the user-signing key stays home.
	bobCS := testkeys.NewCrossSigning(string(bob.UserID))
	keysCall(t, bob, "POST", "keys/device_signing/upload", bobCS.Upload())
	aliceSince = waitDeviceListChange(t, alice, aliceSince, bob.UserID)
	q = keysCall(t, alice, "POST", "keys/query", map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}})
	if dig(q, "master_keys", string(bob.UserID), "keys", testkeys.KeyID(bobCS.Master)) != bobCS.Master.PubB64() ||
		dig(q, "self_signing_keys", string(bob.UserID)) == nil || dig(q, "user_signing_keys", string(bob.UserID)) != nil {
		t.Fatalf("bob's cross-signing keys over federation: %v", q)
	}
	// b.test's device list snapshot (what a server resyncs from) has the
	// keys, the master and self-signing keys and a version.
	var devices map[string]any
	if err := signedJSON(t, a, "b.test", "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(bob.UserID)), nil, &devices); err != nil {
		t.Fatal(err)
	}
	list, _ := devices["devices"].([]any)
	if len(list) != 1 || dig(list[0], "keys", "device_id") != bobDev.DeviceID || dig(list[0], "device_display_name") != nil ||
		dig(devices, "master_key", "usage") == nil || dig(devices, "self_signing_key", "usage") == nil || devices["stream_id"].(float64) <= 0 {
		t.Fatalf("user/devices: %v", devices)
	}

	// Alice verifies Bob: her signature of his master key is kept on
	// a.test and shown to her only.
	aliceCS := testkeys.NewCrossSigning(string(alice.UserID))
	keysCall(t, alice, "POST", "keys/device_signing/upload", aliceCS.Upload())
	master := dig(q, "master_keys", string(bob.UserID)).(map[string]any)
	r := keysCall(t, alice, "POST", "keys/signatures/upload", map[string]any{
		string(bob.UserID): map[string]any{bobCS.Master.PubB64(): aliceCS.SignUser(master)}})
	if f := r["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("signing bob's master key: %v", f)
	}
	q = keysCall(t, alice, "POST", "keys/query", map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}})
	if err := testkeys.Verify(dig(q, "master_keys", string(bob.UserID)), string(alice.UserID), testkeys.KeyID(aliceCS.UserSigning), aliceCS.UserSigning.Pub); err != nil {
		t.Fatalf("alice's signature of bob's master key: %v", err)
	}

	// The other way: Alice's new keys show in Bob's sync on b.test, and
	// a device Bob logs in and out comes and goes in Alice's.
	keysCall(t, alice, "POST", "keys/upload", map[string]any{"device_keys": aliceDev.DeviceKeys()})
	waitDeviceListChange(t, bob, bobSince, alice.UserID)
	phone, err := mautrix.NewClient(b.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Login(bg, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: "correct horse battery", StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}}); err != nil {
		t.Fatal(err)
	}
	phoneDev := testkeys.NewDevice(string(bob.UserID), string(phone.DeviceID))
	keysCall(t, phone, "POST", "keys/upload", map[string]any{"device_keys": phoneDev.DeviceKeys()})
	aliceSince = waitDeviceListChange(t, alice, aliceSince, bob.UserID)
	q = keysCall(t, alice, "POST", "keys/query", map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}})
	if devices, _ := dig(q, "device_keys", string(bob.UserID)).(map[string]any); len(devices) != 2 {
		t.Fatalf("bob's devices after a login: %v", devices)
	}
	if _, err := phone.Logout(bg); err != nil {
		t.Fatal(err)
	}
	waitDeviceListChange(t, alice, aliceSince, bob.UserID)
	q = keysCall(t, alice, "POST", "keys/query", map[string]any{"device_keys": map[string]any{string(bob.UserID): []string{}}})
	if devices, _ := dig(q, "device_keys", string(bob.UserID)).(map[string]any); len(devices) != 1 {
		t.Fatalf("bob's devices after a logout: %v", devices)
	}
}
