package federation_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/testserver"
)

// loginAgain logs an existing user in on a new device.
func loginAgain(t *testing.T, s *testserver.Server, c *mautrix.Client) *mautrix.Client {
	t.Helper()
	n, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Login(bg, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(c.UserID)},
		Password:         "correct horse battery",
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func deviceIDOf(t *testing.T, c *mautrix.Client) id.DeviceID {
	t.Helper()
	who, err := c.Whoami(bg)
	if err != nil {
		t.Fatal(err)
	}
	return who.DeviceID
}

// toDeviceInbox syncs c (long-polling from since) until n to-device
// messages have arrived, acknowledging them as it goes, and returns them
// with the last token.
func toDeviceInbox(t *testing.T, c *mautrix.Client, since string, n int) ([]*event.Event, string) {
	t.Helper()
	var got []*event.Event
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		resp, err := c.SyncRequest(bg, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		since = resp.NextBatch
		got = append(got, resp.ToDevice.Events...)
	}
	if len(got) < n {
		t.Fatalf("%s: %d of %d to-device messages arrived", c.UserID, len(got), n)
	}
	return got, since
}

func messageNs(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprint(e.Content.Raw["n"]))
	}
	return out
}

func TestSendToDeviceAcrossServers(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	alice := user(t, a, "alice")
	bob1 := user(t, b, "bob")
	bob2 := loginAgain(t, b, bob1)
	dev1 := deviceIDOf(t, bob1)
	start1, err := bob1.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	start2, err := bob2.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}

	typ := event.Type{Type: "m.test", Class: event.ToDeviceEventType}
	send := func(msgs map[id.DeviceID]any) {
		t.Helper()
		req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob1.UserID: {}}}
		for d, c := range msgs {
			req.Messages[bob1.UserID][d] = &event.Content{Raw: c.(map[string]any)}
		}
		if _, err := alice.SendToDevice(bg, typ, req); err != nil {
			t.Fatal(err)
		}
	}
	send(map[id.DeviceID]any{dev1: map[string]any{"n": "one"}})
	send(map[id.DeviceID]any{"*": map[string]any{"n": "all"}})

	got, _ := toDeviceInbox(t, bob1, start1.NextBatch, 2)
	if ns := messageNs(got); !slices.Equal(ns, []string{"one", "all"}) {
		t.Fatalf("bob's first device got %v", ns)
	}
	if got[0].Sender != alice.UserID || got[0].Type.Type != "m.test" {
		t.Fatalf("message = %+v", got[0])
	}
	got, _ = toDeviceInbox(t, bob2, start2.NextBatch, 1)
	if ns := messageNs(got); !slices.Equal(ns, []string{"all"}) {
		t.Fatalf("bob's second device got %v", ns)
	}
}

// TestInboundToDeviceEDU sends m.direct_to_device EDUs to b.test as a.test
// would: once per message ID, only from a.test's own users.
func TestInboundToDeviceEDU(t *testing.T) {
	servers := testserver.StartFederation(t, []string{"a.test", "b.test"})
	a, b := servers[0], servers[1]
	bob1 := user(t, b, "bob")
	bob2 := loginAgain(t, b, bob1)
	dev1 := deviceIDOf(t, bob1)
	start1, err := bob1.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signingkey.Load(a.Config.Path(a.Config.SigningKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	f := &forger{t: t, a: a, b: b, key: key}
	edu := func(sender, messageID string, messages map[string]any) map[string]any {
		return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
			"sender": sender, "type": "m.test", "message_id": messageID, "messages": messages,
		}}
	}
	txn := func(txnID string, edus ...map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"origin": "a.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus})
		if status, resp := f.send(txnID, body); status != 200 {
			t.Fatalf("transaction %s: %d %s", txnID, status, resp)
		}
	}
	toBob := func(device string, n string) map[string]any {
		return map[string]any{string(bob1.UserID): map[string]any{device: map[string]any{"n": n}}}
	}
	txn("t1",
		edu("@alice:a.test", "m1", toBob(string(dev1), "first")),
		edu("@mallory:c.test", "m2", toBob(string(dev1), "forged sender")),
		edu("not a user", "m3", toBob(string(dev1), "no sender")),
		edu("@alice:a.test", "", toBob(string(dev1), "no message ID")),
		edu("@alice:a.test", "m4", map[string]any{
			"@carol:c.test":     map[string]any{"*": map[string]any{"n": "not ours"}},
			string(bob1.UserID): map[string]any{"*": map[string]any{"n": "all"}, "NOSUCHDEVICE": map[string]any{"n": "lost"}},
		}),
	)
	// The same message ID again, in another transaction: a re-sent EDU.
	txn("t2", edu("@alice:a.test", "m1", toBob(string(dev1), "first")))
	txn("t3", edu("@alice:a.test", "m5", toBob("*", "last")))

	got, _ := toDeviceInbox(t, bob1, start1.NextBatch, 3)
	if ns := messageNs(got); !slices.Equal(ns, []string{"first", "all", "last"}) {
		t.Fatalf("bob's first device got %v", ns)
	}
	// Delivery is done by the time each transaction is answered: an
	// initial sync of the other device sees everything it will get.
	resp, err := bob2.SyncRequest(bg, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if ns := messageNs(resp.ToDevice.Events); !slices.Equal(ns, []string{"all", "last"}) {
		t.Fatalf("bob's second device got %v", ns)
	}
}
