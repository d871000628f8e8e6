package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/veche/veche/internal/testserver"
)

const testPassword = "correct horse battery"

var ctx = context.Background()

// newClient returns a mautrix client for the server, without credentials
// and without automatic retries (tests want to see every answer).
func newClient(t *testing.T, s *testserver.Server) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.DefaultHTTPRetries = 0
	return cli
}

// registerUser creates an account through the dummy registration flow and
// returns a client logged in as it.
func registerUser(t *testing.T, s *testserver.Server, username string) *mautrix.Client {
	t.Helper()
	cli := newClient(t, s)
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: username, Password: testPassword})
	if err != nil {
		t.Fatalf("registering %s: %v", username, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

// login logs an existing user in on a new device.
func login(t *testing.T, s *testserver.Server, user, password string) *mautrix.Client {
	t.Helper()
	cli := newClient(t, s)
	_, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("logging in %s: %v", user, err)
	}
	return cli
}

// response is a raw HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func (r response) errcode() string {
	s, _ := r.Body["errcode"].(string)
	return s
}

// do sends a raw request; body may be nil, a string (sent as is) or a value
// to encode as JSON.
func do(t *testing.T, method, url, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			t.Fatalf("%s %s: invalid JSON answer %q", method, url, raw)
		}
	}
	return out
}

// expectError checks a raw answer's status and errcode.
func expectError(t *testing.T, r response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.errcode() != errcode {
		t.Fatalf("got %d %s (%s), want %d %s", r.Status, r.errcode(), r.Raw, status, errcode)
	}
}

// expectMatrixError checks a mautrix error's status and errcode.
func expectMatrixError(t *testing.T, err error, status int, errcode string) {
	t.Helper()
	var he mautrix.HTTPError
	if err == nil {
		t.Fatalf("expected %d %s, got success", status, errcode)
	}
	if !asHTTPError(err, &he) || he.RespError == nil {
		t.Fatalf("expected %d %s, got %v", status, errcode, err)
	}
	if he.Response.StatusCode != status || he.RespError.ErrCode != errcode {
		t.Fatalf("got %d %s (%s), want %d %s", he.Response.StatusCode, he.RespError.ErrCode, he.RespError.Err, status, errcode)
	}
}

func asHTTPError(err error, target *mautrix.HTTPError) bool {
	for err != nil {
		if he, ok := err.(mautrix.HTTPError); ok {
			*target = he
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// passwordAuth is the UIA m.login.password dict for user.
func passwordAuth(session string, user id.UserID, password string) map[string]any {
	return map[string]any{
		"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": string(user)},
	}
}

func clientURL(s *testserver.Server, path string) string {
	return s.URL + "/_matrix/client/v3" + path
}
