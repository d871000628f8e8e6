package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// client talks to one homeserver over one shared connection pool, as a
// crowd of clients behind one host would.
type client struct {
	base string
	hc   *http.Client
	// rateLimited counts 429 answers that were waited out and retried.
	rateLimited atomic.Int64
	txn         atomic.Int64
	runID       string
}

// maxRateLimitRetries stops a request that is refused forever, e.g. by a
// limit the server never lifts, from hanging the run.
const maxRateLimitRetries = 100

func newClient(base, runID string, conns int, timeout time.Duration) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every sender and long-poll keeps its own connection alive; without
	// enough idle slots the pool closes them and each request pays for a
	// new TCP connection, which would be measured as server latency.
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = conns
	// Response sizes are reported, and they should be the server's JSON,
	// comparable across servers whatever compression they offer.
	tr.DisableCompression = true
	return &client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr, Timeout: timeout}, runID: runID}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// answer describes the answered attempt of a request.
type answer struct {
	status int
	bytes  int
	// elapsed runs from sending the request to reading the last byte of
	// the answer, excluding waits on 429 and JSON decoding.
	elapsed time.Duration
}

// apiError is a non-2xx answer, with the Matrix error fields when present.
type apiError struct {
	Method, Path string
	Status       int
	ErrCode      string `json:"errcode"`
	Message      string `json:"error"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Raw          []byte `json:"-"`
}

func (e *apiError) Error() string {
	msg := e.Message
	if e.ErrCode == "" && msg == "" {
		msg = strings.TrimSpace(string(e.Raw))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s: HTTP %d %s %s", e.Method, e.Path, e.Status, e.ErrCode, msg))
}

// parseError reads a non-2xx answer; a body that is not a Matrix error
// (a proxy's HTML page, say) is kept raw for the message.
func parseError(method, path string, status int, body []byte) *apiError {
	e := &apiError{}
	_ = json.Unmarshal(body, e)
	e.Method, e.Path, e.Status, e.Raw = method, path, status, body
	return e
}

// retryAfter is how long a 429 asks to wait: retry_after_ms from the body
// (the spec's field), else the Retry-After header, else a second.
func retryAfter(h http.Header, body []byte) time.Duration {
	var e apiError
	if json.Unmarshal(body, &e) == nil && e.RetryAfterMS > 0 {
		return time.Duration(e.RetryAfterMS) * time.Millisecond
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return time.Second
}

// do sends a JSON request and decodes a 2xx answer into out.
func (c *client) do(ctx context.Context, method, path, token string, in, out any) (answer, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return answer{}, err
		}
	}
	// The query may hold an inline filter or tokens; errors name the route.
	route, _, _ := strings.Cut(path, "?")
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
		if err != nil {
			return answer{}, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		start := time.Now()
		res, err := c.hc.Do(req)
		if err != nil {
			return answer{}, fmt.Errorf("%s %s: %w", method, route, err)
		}
		data, err := io.ReadAll(res.Body)
		res.Body.Close()
		a := answer{status: res.StatusCode, bytes: len(data), elapsed: time.Since(start)}
		if err != nil {
			return a, fmt.Errorf("%s %s: reading answer: %w", method, route, err)
		}
		if res.StatusCode == http.StatusTooManyRequests && attempt < maxRateLimitRetries {
			c.rateLimited.Add(1)
			if err := sleep(ctx, retryAfter(res.Header, data)); err != nil {
				return a, err
			}
			continue
		}
		if res.StatusCode/100 != 2 {
			return a, parseError(method, route, res.StatusCode, data)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return a, fmt.Errorf("%s %s: decoding answer: %w", method, route, err)
			}
		}
		return a, nil
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

const clientV3 = "/_matrix/client/v3"

func roomPath(roomID string) string { return clientV3 + "/rooms/" + url.PathEscape(roomID) }

// user is a logged-in account.
type user struct {
	ID    string
	Token string
}

// event is the part of a client event the scenarios look at.
type event struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Body string `json:"body"`
	} `json:"content"`
}

type timeline struct {
	Events    []event `json:"events"`
	Limited   bool    `json:"limited"`
	PrevBatch string  `json:"prev_batch"`
}

type joinedRoom struct {
	Timeline timeline `json:"timeline"`
	State    struct {
		Events []event `json:"events"`
	} `json:"state"`
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]joinedRoom      `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
		Leave  map[string]json.RawMessage `json:"leave"`
	} `json:"rooms"`
}

type messagesResponse struct {
	Chunk []event `json:"chunk"`
	Start string  `json:"start"`
	End   string  `json:"end"`
}

func (c *client) versions(ctx context.Context) ([]string, error) {
	var out struct {
		Versions []string `json:"versions"`
	}
	_, err := c.do(ctx, "GET", "/_matrix/client/versions", "", nil, &out)
	if err == nil && len(out.Versions) == 0 {
		err = errors.New("GET /_matrix/client/versions: no versions: is this a Matrix client API URL?")
	}
	return out.Versions, err
}

// createRoom makes a public room so that other users can join it without
// an invite round trip.
func (c *client) createRoom(ctx context.Context, u *user, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	_, err := c.do(ctx, "POST", clientV3+"/createRoom", u.Token, map[string]any{"preset": "public_chat", "name": name}, &out)
	if err == nil && out.RoomID == "" {
		err = errors.New("POST /createRoom: answer has no room_id")
	}
	return out.RoomID, err
}

func (c *client) join(ctx context.Context, u *user, roomID string) error {
	_, err := c.do(ctx, "POST", roomPath(roomID)+"/join", u.Token, map[string]any{}, nil)
	return err
}

// send posts an m.text message with a fresh transaction ID, so that a
// retried request could never be taken for a duplicate of another.
func (c *client) send(ctx context.Context, u *user, roomID, body string) (string, answer, error) {
	txn := c.runID + "." + strconv.FormatInt(c.txn.Add(1), 10)
	var out struct {
		EventID string `json:"event_id"`
	}
	a, err := c.do(ctx, "PUT", roomPath(roomID)+"/send/m.room.message/"+url.PathEscape(txn), u.Token,
		map[string]string{"msgtype": "m.text", "body": body}, &out)
	if err == nil && out.EventID == "" {
		err = errors.New("PUT /send: answer has no event_id")
	}
	return out.EventID, a, err
}

func (c *client) uploadFilter(ctx context.Context, u *user, filter any) (string, error) {
	var out struct {
		FilterID string `json:"filter_id"`
	}
	_, err := c.do(ctx, "POST", clientV3+"/user/"+url.PathEscape(u.ID)+"/filter", u.Token, filter, &out)
	if err == nil && out.FilterID == "" {
		err = errors.New("POST /filter: answer has no filter_id")
	}
	return out.FilterID, err
}

// sync is GET /sync; an empty since is an initial sync, an empty filter
// the server's default.
func (c *client) sync(ctx context.Context, u *user, since, filter string, timeoutMS int) (*syncResponse, answer, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	q.Set("timeout", strconv.Itoa(timeoutMS))
	var out syncResponse
	a, err := c.do(ctx, "GET", clientV3+"/sync?"+q.Encode(), u.Token, nil, &out)
	if err == nil && out.NextBatch == "" {
		err = errors.New("GET /sync: answer has no next_batch")
	}
	return &out, a, err
}

// messages is one page of GET /rooms/{roomId}/messages; an empty from
// starts at the end of the room (dir=b) as spec v1.3 allows.
func (c *client) messages(ctx context.Context, u *user, roomID, from string, limit int) (*messagesResponse, answer, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	var out messagesResponse
	a, err := c.do(ctx, "GET", roomPath(roomID)+"/messages?"+q.Encode(), u.Token, nil, &out)
	return &out, a, err
}
