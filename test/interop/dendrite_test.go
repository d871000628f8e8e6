// Package interop checks Veche against homeservers of other
// implementations. The tests run when VECHE_DENDRITE names a directory
// holding Dendrite's dendrite, generate-config and generate-keys binaries
// (test/interop/run.sh builds them from the Go module proxy); otherwise
// they are skipped.
package interop

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

var ctx = context.Background()

// dendrite is a running Dendrite monolith.
type dendrite struct {
	name      string // server name: 127.0.0.1:<federation port>
	clientURL string
}

// freePort finds a port for Dendrite, which cannot be told to listen on
// port 0 and report back. Closing and reusing is a small race, acceptable
// in an opt-in interop test.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startDendrite(t *testing.T, bin string) *dendrite {
	t.Helper()
	dir := t.TempDir()
	httpPort, fedPort := freePort(t), freePort(t)
	name := fmt.Sprintf("127.0.0.1:%d", fedPort)
	run := func(args ...string) []byte {
		cmd := exec.Command(filepath.Join(bin, args[0]), args[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return out
	}
	cfg := run("generate-config", "-ci", "-server", name, "-dir", dir)
	// Veche listens on loopback with a self-signed certificate.
	cfg = bytes.Replace(cfg, []byte("  disable_tls_validation: false"), []byte("  disable_tls_validation: true"), -1)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	run("generate-keys", "--private-key", "matrix_key.pem", "--tls-cert", "server.crt", "--tls-key", "server.key")
	logs, err := os.Create(filepath.Join(dir, "dendrite.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "dendrite"), "--config", "dendrite.yaml", "-really-enable-open-registration",
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--https-bind-address", name, "--tls-cert", "server.crt", "--tls-key", "server.key")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logs.Close()
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(dir, "dendrite.log"))
			if len(out) > 20000 {
				out = out[len(out)-20000:]
			}
			t.Logf("dendrite log (tail):\n%s", out)
		}
	})
	d := &dendrite{name: name, clientURL: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	// Wait for Dendrite to answer (it starts in a few seconds).
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(d.clientURL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dendrite did not start: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // polling a child process's readiness; nothing to wait on
	}
}

// register creates a Dendrite user with the shared-secret admin API (the
// -ci config's secret is "complement").
func (d *dendrite) register(t *testing.T, localpart string) *mautrix.Client {
	t.Helper()
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	resp, err := http.Get(d.clientURL + "/_synapse/admin/v1/register")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&nonce)
	resp.Body.Close()
	mac := hmac.New(sha1.New, []byte("complement"))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + "correct horse battery" + "\x00" + "notadmin"))
	body, _ := json.Marshal(map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": "correct horse battery",
		"admin": false, "mac": hex.EncodeToString(mac.Sum(nil))})
	resp, err = http.Post(d.clientURL+"/_synapse/admin/v1/register", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reg struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reg); err != nil || reg.AccessToken == "" {
		t.Fatalf("registering on dendrite: %d %v", resp.StatusCode, err)
	}
	c, err := mautrix.NewClient(d.clientURL, id.UserID(reg.UserID), reg.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func vecheUser(t *testing.T, s *testserver.Server, name string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	c.SetCredentials(reg.UserID, reg.AccessToken)
	return c
}

// waitFor long-polls c's /sync until an event of the room matches.
func waitFor(t *testing.T, c *mautrix.Client, roomID id.RoomID, what string, cond func(*event.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		rooms := []*mautrix.SyncJoinedRoom{resp.Rooms.Join[roomID]}
		for _, jr := range rooms {
			if jr == nil {
				continue
			}
			for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
				if cond(e) {
					return
				}
			}
		}
		if ir, ok := resp.Rooms.Invite[roomID]; ok {
			for _, e := range ir.State.Events {
				if cond(e) {
					return
				}
			}
		}
	}
	t.Fatalf("%s: timed out waiting for %s", c.UserID, what)
}

func message(body string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		b, _ := e.Content.Raw["body"].(string)
		return e.Type == event.EventMessage && b == body
	}
}

func member(user id.UserID, membership string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		m, _ := e.Content.Raw["membership"].(string)
		return e.Type == event.StateMember && e.StateKey != nil && *e.StateKey == string(user) && m == membership
	}
}

func TestDendriteInterop(t *testing.T) {
	bin := os.Getenv("VECHE_DENDRITE")
	if bin == "" {
		t.Skip("VECHE_DENDRITE is not set: run test/interop/run.sh to build Dendrite and run this test")
	}
	d := startDendrite(t, bin)
	v := testserver.StartAtAddress(t)
	alice := vecheUser(t, v, "alice")
	dan := d.register(t, "dan")
	vName := v.Config.ServerName

	t.Run("dendrite joins a veche room", func(t *testing.T) {
		// Dendrite 0.13 predates room version 12 (its room IDs have no
		// server part), so shared rooms use 11.
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Veche room", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "history from veche"); err != nil {
			t.Fatal(err)
		}
		if _, err := dan.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{vName}}); err != nil {
			t.Fatalf("dendrite joining through veche: %v", err)
		}
		waitFor(t, alice, room.RoomID, "dan's join on veche", member(dan.UserID, "join"))
		if _, err := alice.SendText(ctx, room.RoomID, "hello dendrite"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, dan, room.RoomID, "alice's message on dendrite", message("hello dendrite"))
		if _, err := dan.SendText(ctx, room.RoomID, "hello veche"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, alice, room.RoomID, "dan's message on veche", message("hello veche"))
	})

	t.Run("veche joins a dendrite room", func(t *testing.T) {
		room, err := dan.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Dendrite room", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dan.SendText(ctx, room.RoomID, "history from dendrite"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{d.name}}); err != nil {
			t.Fatalf("veche joining through dendrite: %v", err)
		}
		waitFor(t, dan, room.RoomID, "alice's join on dendrite", member(alice.UserID, "join"))
		if _, err := dan.SendText(ctx, room.RoomID, "welcome alice"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, alice, room.RoomID, "dan's message on veche", message("welcome alice"))
		if _, err := alice.SendText(ctx, room.RoomID, "thanks dan"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, dan, room.RoomID, "alice's message on dendrite", message("thanks dan"))
		// History from before the join comes through backfill.
		msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var saw bool
		for _, e := range msgs.Chunk {
			saw = saw || message("history from dendrite")(e)
		}
		if !saw {
			t.Errorf("backfill from dendrite did not bring the earlier message")
		}
	})

	t.Run("invites both ways", func(t *testing.T) {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: dan.UserID}); err != nil {
			t.Fatalf("inviting a dendrite user: %v", err)
		}
		waitFor(t, dan, room.RoomID, "the invite on dendrite", member(dan.UserID, "invite"))
		if _, err := dan.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{vName}}); err != nil {
			t.Fatalf("dendrite accepting: %v", err)
		}
		waitFor(t, alice, room.RoomID, "dan's join", member(dan.UserID, "join"))

		other, err := dan.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dan.InviteUser(ctx, other.RoomID, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
			t.Fatalf("dendrite inviting a veche user: %v", err)
		}
		waitFor(t, alice, other.RoomID, "the invite on veche", member(alice.UserID, "invite"))
		if _, err := alice.JoinRoom(ctx, string(other.RoomID), nil); err != nil {
			t.Fatalf("veche accepting: %v", err)
		}
		waitFor(t, dan, other.RoomID, "alice's join", member(alice.UserID, "join"))
	})
}
