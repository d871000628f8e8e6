package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veche/veche/internal/testdb"
)

// The test binary runs veche's main when this variable is set, so that a
// test can start a real veche process and kill it.
const runMainEnv = "VECHE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

var listeningRE = regexp.MustCompile(`msg="Veche is listening" client="?([0-9.:]+)"?`)

// startVeche runs veche as a child process and returns its client URL.
func startVeche(t *testing.T, dir, dbURL string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", filepath.Join(dir, "veche.yaml"), "--listen-client", "127.0.0.1:0", "--listen-federation", "127.0.0.1:0",
		"--database-url", dbURL, "--set", "registration.enabled=true", "--set", "rate_limits.enabled=false",
		"--set", "password.argon2.memory_kib=64", "--set", "password.argon2.iterations=1")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			t.Fatal("veche exited before listening")
		}
		return cmd, "http://" + addr
	case <-time.After(60 * time.Second):
		t.Fatal("veche did not start listening")
	}
	return nil, ""
}

func call(t *testing.T, method, url, token string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	if res.StatusCode >= 300 && res.StatusCode != 401 {
		t.Fatalf("%s %s = %d %v", method, url, res.StatusCode, out)
	}
	return out
}

// TestAcknowledgedSurvivesKill9: everything the server answered 200 for
// is there after SIGKILL and a restart.
func TestAcknowledgedSurvivesKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbURL := testdb.URL(t)
	cmd, base := startVeche(t, dir, dbURL)
	api := base + "/_matrix/client/v3"
	first := call(t, "POST", api+"/register", "", map[string]any{"username": "alice", "password": "password123"})
	reg := call(t, "POST", api+"/register", "", map[string]any{"username": "alice", "password": "password123",
		"auth": map[string]any{"type": "m.login.dummy", "session": first["session"]}})
	tok := reg["access_token"].(string)
	room := call(t, "POST", api+"/createRoom", tok, map[string]any{"name": "durable"})["room_id"].(string)
	var sent []string
	for i := range 30 {
		r := call(t, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/k%d", api, room, i), tok,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("m%d", i)})
		sent = append(sent, r["event_id"].(string))
	}
	call(t, "PUT", api+"/user/@alice:localhost/account_data/org.example.k", tok, map[string]any{"v": 1})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	_, base = startVeche(t, dir, dbURL)
	api = base + "/_matrix/client/v3"
	msgs := call(t, "GET", api+"/rooms/"+room+"/messages?dir=b&limit=100", tok, nil)
	got := map[string]bool{}
	for _, e := range msgs["chunk"].([]any) {
		got[e.(map[string]any)["event_id"].(string)] = true
	}
	for i, id := range sent {
		if !got[id] {
			t.Fatalf("message %d (%s) acknowledged before SIGKILL is gone", i, id)
		}
	}
	if ad := call(t, "GET", api+"/user/@alice:localhost/account_data/org.example.k", tok, nil); ad["v"] != float64(1) {
		t.Fatalf("account data after SIGKILL = %v", ad)
	}
	// The stream moves on past what was there: new events sync normally.
	next := call(t, "PUT", api+"/rooms/"+room+"/send/m.room.message/after", tok, map[string]any{"msgtype": "m.text", "body": "after"})
	sync := call(t, "GET", api+"/sync", tok, nil)
	if !strings.Contains(fmt.Sprint(sync["rooms"]), next["event_id"].(string)) {
		t.Fatal("the message sent after the restart is not in /sync")
	}
}
