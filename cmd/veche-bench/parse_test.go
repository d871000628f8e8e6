package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseError(t *testing.T) {
	e := parseError("PUT", "/x", 403, []byte(`{"errcode":"M_FORBIDDEN","error":"You are not in the room"}`))
	if e.ErrCode != "M_FORBIDDEN" || e.Message != "You are not in the room" || e.Status != 403 {
		t.Errorf("parsed %+v", e)
	}
	if got, want := e.Error(), "PUT /x: HTTP 403 M_FORBIDDEN You are not in the room"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// A proxy's error page is not JSON; its text is the message.
	e = parseError("GET", "/y", 502, []byte("<html>Bad Gateway</html>\n"))
	if got, want := e.Error(), "GET /y: HTTP 502  <html>Bad Gateway</html>"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRetryAfter(t *testing.T) {
	h := http.Header{}
	if got := retryAfter(h, []byte(`{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}`)); got != 1500*time.Millisecond {
		t.Errorf("from body: %v", got)
	}
	h.Set("Retry-After", "3")
	if got := retryAfter(h, []byte(`{"errcode":"M_LIMIT_EXCEEDED"}`)); got != 3*time.Second {
		t.Errorf("from header: %v", got)
	}
	// The body's millisecond value is more precise than the header's.
	if got := retryAfter(h, []byte(`{"retry_after_ms":200}`)); got != 200*time.Millisecond {
		t.Errorf("body over header: %v", got)
	}
	if got := retryAfter(http.Header{}, []byte(`nonsense`)); got != time.Second {
		t.Errorf("default: %v", got)
	}
}

func TestDoWaitsOutRateLimits(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(429)
			io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":20}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(400)
			return
		}
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, `{"echo":`+string(body)+`}`)
	}))
	defer srv.Close()
	c := newClient(srv.URL+"/", "run", 4, 5*time.Second)
	var out struct {
		Echo map[string]int `json:"echo"`
	}
	start := time.Now()
	a, err := c.do(context.Background(), "POST", "/p", "tok", map[string]int{"n": 7}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.Echo["n"] != 7 || a.status != 200 || a.bytes != len(`{"echo":{"n":7}}`) {
		t.Errorf("answer %+v, decoded %+v", a, out)
	}
	if c.rateLimited.Load() != 2 || calls.Load() != 3 {
		t.Errorf("rate limited %d times over %d calls, want 2 over 3", c.rateLimited.Load(), calls.Load())
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Error("did not wait retry_after_ms")
	}
	if a.elapsed > 40*time.Millisecond {
		t.Errorf("latency %v includes the waits", a.elapsed)
	}
}

func TestDoReturnsMatrixErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}))
	defer srv.Close()
	c := newClient(srv.URL, "run", 4, 5*time.Second)
	_, err := c.do(context.Background(), "GET", "/_matrix/client/v3/sync?since=s1&filter=x", "", nil, nil)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != 500 || ae.ErrCode != "M_UNKNOWN" {
		t.Fatalf("err = %v", err)
	}
	// The query, which may carry tokens and filters, stays out of errors.
	if strings.Contains(err.Error(), "since") || !strings.Contains(err.Error(), "/_matrix/client/v3/sync") {
		t.Errorf("error message %q", err)
	}
}

func TestDecodeSync(t *testing.T) {
	raw := `{
	  "next_batch": "s72595_4483_1934",
	  "account_data": {"events": []},
	  "rooms": {
	    "join": {
	      "!abc:example.org": {
	        "state": {"events": [{"type": "m.room.member", "state_key": "@a:example.org", "sender": "@a:example.org",
	                              "event_id": "$m", "content": {"membership": "join"}}]},
	        "timeline": {
	          "events": [
	            {"type": "m.room.message", "event_id": "$1", "sender": "@a:example.org",
	             "content": {"msgtype": "m.text", "body": "veche-bench r delivery 0/1"}, "origin_server_ts": 1},
	            {"type": "m.room.topic", "state_key": "", "event_id": "$2", "sender": "@a:example.org",
	             "content": {"topic": {"nested": true}}}
	          ],
	          "limited": true,
	          "prev_batch": "t3_5"
	        },
	        "ephemeral": {"events": []},
	        "unread_notifications": {"highlight_count": 0}
	      }
	    },
	    "invite": {"!inv:example.org": {"invite_state": {"events": []}}},
	    "leave": {}
	  }
	}`
	var s syncResponse
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	jr, ok := s.Rooms.Join["!abc:example.org"]
	if s.NextBatch != "s72595_4483_1934" || !ok || len(s.Rooms.Invite) != 1 {
		t.Fatalf("decoded %+v", s)
	}
	tl := jr.Timeline
	if len(tl.Events) != 2 || !tl.Limited || tl.PrevBatch != "t3_5" || len(jr.State.Events) != 1 {
		t.Fatalf("timeline %+v", tl)
	}
	if e := tl.Events[0]; e.EventID != "$1" || e.Type != "m.room.message" || e.Content.Body != "veche-bench r delivery 0/1" || e.StateKey != nil {
		t.Errorf("message %+v", e)
	}
	if e := tl.Events[1]; e.StateKey == nil || *e.StateKey != "" || e.Content.Body != "" {
		t.Errorf("state event %+v", e)
	}
}

func TestDecodeMessages(t *testing.T) {
	var m messagesResponse
	if err := json.Unmarshal([]byte(`{"chunk":[{"event_id":"$b","type":"m.room.message","content":{"body":"x"}},
		{"event_id":"$a","type":"m.room.create","state_key":"","content":{"creator":"@a:b"}}],"start":"t9_9","end":"t1_1"}`), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Chunk) != 2 || m.Start != "t9_9" || m.End != "t1_1" || m.Chunk[1].Type != "m.room.create" {
		t.Errorf("decoded %+v", m)
	}
	// The last page has no end.
	m = messagesResponse{}
	if err := json.Unmarshal([]byte(`{"chunk":[],"start":"t1_1"}`), &m); err != nil || m.End != "" {
		t.Errorf("last page: %+v %v", m, err)
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tveche\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1300000 kB\nVmHWM:\t   61234 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n"
	s, err := parseStatus(status)
	if err != nil || s.RSSKiB != 40960 || s.HWMKiB != 61234 {
		t.Errorf("parseStatus = %+v, %v", s, err)
	}
	if _, err := parseStatus("Name:\tkthreadd\nState:\tS (sleeping)\n"); err == nil {
		t.Error("a kernel thread has no memory lines; want an error")
	}
	if _, err := parseStatus("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"); err == nil {
		t.Error("want an error for a malformed value")
	}

	// The command name may contain spaces and parentheses.
	stat := "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 130 0 0 20 0 12 0 100 0 0"
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.8 {
		t.Errorf("parseStatCPU = %v, %v; want 3.8 s", cpu, err)
	}
	if _, err := parseStatCPU("4242 (x) S 1"); err == nil {
		t.Error("want an error for a short stat")
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.RSSKiB <= 0 || s.HWMKiB < s.RSSKiB {
		t.Errorf("readProc(self) = %+v", s)
	}
}

func TestSharedSecretMAC(t *testing.T) {
	// Computed with Python: hmac.new(b"secret", b"abcnonce\0alice\0pw\0notadmin", sha1).
	if got, want := sharedSecretMAC("secret", "abcnonce", "alice", "pw"), "d7b2b3897626f6a3fee646b026b0f69f6ca04fe3"; got != want {
		t.Errorf("MAC = %s, want %s", got, want)
	}
}

func TestChooseFlow(t *testing.T) {
	flows := func(fs ...[]string) uiaAnswer {
		var u uiaAnswer
		for _, f := range fs {
			u.Flows = append(u.Flows, struct {
				Stages []string `json:"stages"`
			}{f})
		}
		return u
	}
	r := &registrar{}
	got, err := r.chooseFlow(flows([]string{"m.login.recaptcha", stageDummy}, []string{stageDummy}))
	if err != nil || len(got) != 1 || got[0] != stageDummy {
		t.Errorf("dummy: %v %v", got, err)
	}
	_, err = r.chooseFlow(flows([]string{stageToken}))
	if err == nil || !strings.Contains(err.Error(), "--registration-token") {
		t.Errorf("token without a token: %v", err)
	}
	r.token = "tok"
	got, err = r.chooseFlow(flows([]string{"m.login.email.identity"}, []string{stageTokenUnstable, stageDummy}))
	if err != nil || len(got) != 2 {
		t.Errorf("token flow: %v %v", got, err)
	}
}

// A server that wants the token stage and then the dummy one, as Synapse
// does with registration_requires_token.
func TestRegisterUIAWalksStages(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies []map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		auth, _ := body["auth"].(map[string]any)
		completed := `[]`
		switch {
		case auth == nil:
		case auth["type"] == stageToken && auth["token"] == "good" && auth["session"] == "S":
			completed = `["m.login.registration_token"]`
		case auth["type"] == stageDummy && auth["session"] == "S":
			io.WriteString(w, `{"user_id":"@u:x","access_token":"at","device_id":"D"}`)
			return
		default:
			w.WriteHeader(401)
			io.WriteString(w, `{"errcode":"M_UNAUTHORIZED","error":"Invalid token","session":"S","completed":[],
				"flows":[{"stages":["m.login.registration_token","m.login.dummy"]}]}`)
			return
		}
		w.WriteHeader(401)
		io.WriteString(w, `{"session":"S","completed":`+completed+`,"flows":[{"stages":["m.login.registration_token","m.login.dummy"]}]}`)
	}))
	defer srv.Close()
	r := &registrar{c: newClient(srv.URL, "run", 4, 5*time.Second), password: "pw", token: "good"}
	u, err := r.register(context.Background(), "alice")
	if err != nil || u.ID != "@u:x" || u.Token != "at" {
		t.Fatalf("register = %+v, %v", u, err)
	}
	mu.Lock()
	if len(bodies) != 3 || bodies[0]["username"] != "alice" || bodies[2]["password"] != "pw" {
		t.Errorf("requests %v", bodies)
	}
	bodies = nil
	mu.Unlock()

	// A wrong token is tried once and the server's refusal reported.
	r.token = "bad"
	if _, err := r.register(context.Background(), "bob"); err == nil || !strings.Contains(err.Error(), "Invalid token") {
		t.Errorf("wrong token: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 {
		t.Errorf("wrong token: %d requests, want 2", len(bodies))
	}
}

func TestCommandLineRedactsSecrets(t *testing.T) {
	got := commandLine([]string{"--url", "http://h:1", "--shared-secret", "s3cret", "--registration-token=tok", "--prefix", "a b"})
	want := "veche-bench --url http://h:1 --shared-secret REDACTED --registration-token=REDACTED --prefix 'a b'"
	if got != want {
		t.Errorf("commandLine = %q, want %q", got, want)
	}
	got = commandLine([]string{"-shared-secret2=x", "--registration-token2", "y", "--shared-secret2=z", "-registration-token=w"})
	want = "veche-bench -shared-secret2=REDACTED --registration-token2 REDACTED --shared-secret2=REDACTED -registration-token=REDACTED"
	if got != want {
		t.Errorf("commandLine = %q, want %q", got, want)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--url", "http://h:1", "--senders", "12", "--users", "3", "--scenario", "messages, send-one,messages"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.users != 12 {
		t.Errorf("users = %d, want raised to the 12 senders", o.users)
	}
	if strings.Join(o.scenarios, ",") != "send-one,messages" {
		t.Errorf("scenarios = %v", o.scenarios)
	}
	if !strings.HasPrefix(o.prefix, "bench") || len(o.prefix) != 13 {
		t.Errorf("default prefix %q", o.prefix)
	}
	for _, bad := range [][]string{
		{},
		{"--url", "127.0.0.1:8008"},
		{"--url", "http://h", "--scenario", "nope"},
		{"--url", "http://h", "--messages", "0"},
		{"--url", "http://h", "--prefix", "Upper"},
		{"--url", "http://h", "--timeout", "10s"},
		{"--url", "http://h", "extra"},
		{"--url", "http://h", "--scenario", "federation"},
		{"--url", "http://h", "--scenario", "federation", "--url2", "h2:8008"},
		{"--url", "http://h", "--scenario", "big-join", "--big-room-version", "99"},
		{"--url", "http://h", "--scenario", "big-join", "--fake-server-name", "bad name"},
		{"--url", "http://h", "--scenario", "big-join", "--big-members", "0"},
		{"--url", "http://h", "--big-state", "-1"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

// The two-server scenarios run only when named; the second server's
// registration falls back to the first's.
func TestParseFlagsExplicitScenarios(t *testing.T) {
	o, err := parseFlags([]string{"--url", "http://h:1", "--scenario", "all"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(o.scenarios, "federation") || slices.Contains(o.scenarios, "big-join") || len(o.scenarios) != 5 {
		t.Errorf("all = %v", o.scenarios)
	}
	o, err = parseFlags([]string{"--url", "http://h:1", "--url2", "http://h:2", "--scenario", "big-join,federation,send-one",
		"--shared-secret", "s1", "--registration-token2", "t2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.scenarios, ",") != "send-one,federation,big-join" {
		t.Errorf("scenarios = %v", o.scenarios)
	}
	if o.sharedSecret2 != "s1" || o.registrationToken2 != "t2" || o.registrationToken != "" {
		t.Errorf("second server's registration: secret %q token %q", o.sharedSecret2, o.registrationToken2)
	}
	if o.bigMembers != 10000 || o.bigState != 20000 || o.bigRoomVersion != "12" || o.fakeServerName != "big.bench" {
		t.Errorf("big-join defaults %+v", o)
	}
}

func TestFiguresJSON(t *testing.T) {
	var r Result
	r.figure("b", "second", 2, "")
	r.figure("a", "first", 1.5, "s")
	data, err := json.Marshal(r.Figures)
	if err != nil || string(data) != `{"b":2,"a":1.5}` {
		t.Fatalf("marshal = %s, %v", data, err)
	}
	var back figures
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if v, ok := back.Get("a"); !ok || v != 1.5 {
		t.Errorf("round trip: %v", back)
	}
}
