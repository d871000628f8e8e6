// Package syncapi serves GET /sync: what changed for a user since a stream
// position, long-polling until something does. Everything it reads has a
// position in the one global stream (internal/stream), so "what changed
// since T" is a set of range queries up to the stream's current position.
package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/veche/veche/accounts"
	"github.com/veche/veche/internal/clientevent"
	"github.com/veche/veche/internal/filter"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

// Deps are what sync needs.
type Deps struct {
	DB         *storage.DB
	Roomserver *roomserver.Roomserver
	Stream     *stream.Stream
	Typing     *typing.Tracker
	Log        logrus.FieldLogger
	Now        func() time.Time

	// Presence gives the presence section and takes set_presence; nil
	// leaves both out.
	Presence *presence.Presence
}

// Sync serves /sync.
type Sync struct {
	db     *storage.DB
	rs     *roomserver.Roomserver
	stream *stream.Stream
	typing *typing.Tracker
	format *clientevent.Formatter
	unread unreadCache
	// pushCtx caches what push rule conditions read of a room's state.
	pushCtxMu sync.Mutex
	pushCtx   map[pushContextKey]pushContextData
	log       logrus.FieldLogger
	now       func() time.Time
	// closing ends long-polls at shutdown, so that they do not hold up the
	// graceful drain of in-flight requests.
	closing   chan struct{}
	closeOnce sync.Once

	presence *presence.Presence
}

// Close ends every waiting long-poll with its (empty) answer.
func (s *Sync) Close() { s.closeOnce.Do(func() { close(s.closing) }) }

// New returns the sync API.
func New(d Deps) *Sync {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Sync{db: d.DB, rs: d.Roomserver, stream: d.Stream, typing: d.Typing, log: d.Log, now: d.Now, closing: make(chan struct{}),
		format: &clientevent.Formatter{RS: d.Roomserver, DB: d.DB, Now: d.Now}, presence: d.Presence}
}

const (
	// maxTimeout caps the long-poll; clients ask for 30 s typically.
	maxTimeout = 5 * time.Minute
	// defaultTimelineLimit is the timeline length without a filter.
	defaultTimelineLimit = 10
	maxTimelineLimit     = 1000
)

// request is a parsed /sync request.
type request struct {
	user *accounts.Requester
	// initial: no since token, so everything up to now. (A since of 0 is
	// a real position: a server with nothing in its stream yet.)
	initial bool
	since   int64
	// sinceTyping is the typing tracker's position, which lives outside
	// the global stream (typing is never persisted).
	sinceTyping int64
	timeout     time.Duration
	fullState   bool
	filter      *filter.Filter
	ignored     map[string]bool
	// pushRules is what unread counting needs, loaded once per response.
	pushRules *unreadInput
}

func (r *request) unreadInput() *unreadInput { return r.pushRules }

// Handle is GET /sync; mount it behind the client API's token check.
func (s *Sync) Handle(r *http.Request) (any, error) {
	req, err := s.parse(r)
	if err != nil {
		return nil, err
	}
	userID := req.user.UserID.String()
	if req.since > 0 {
		s.stream.AtLeast(req.since)
	}
	presenceDone, err := s.syncPresence(r, req)
	if err != nil {
		return nil, err
	}
	defer presenceDone()
	sub := s.stream.Subscribe(userID)
	defer sub.Close()
	var timer <-chan time.Time
	if req.timeout > 0 {
		t := time.NewTimer(req.timeout)
		defer t.Stop()
		timer = t.C
	}
	for {
		pos := s.stream.Current()
		resp, err := s.build(r.Context(), req, pos)
		if err != nil {
			return nil, err
		}
		if req.initial || req.fullState || !resp.empty() || req.timeout == 0 {
			return resp, nil
		}
		select {
		case <-sub.C():
		case <-timer:
			return resp, nil
		case <-s.closing:
			return resp, nil
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

func (s *Sync) parse(r *http.Request) (*request, error) {
	q := r.URL.Query()
	req := &request{user: accounts.RequesterFrom(r.Context()), initial: q.Get("since") == ""}
	if since := q.Get("since"); since != "" {
		pos, typingPos, err := parseToken(since)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid since token")
		}
		req.since, req.sinceTyping = pos, typingPos
	}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxerr.InvalidParam("Invalid timeout")
		}
		req.timeout = min(time.Duration(ms)*time.Millisecond, maxTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return nil, mxerr.InvalidParam("full_state must be true or false")
	}
	f, err := s.loadFilter(r.Context(), req.user, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.filter = f
	return req, nil
}

// loadFilter reads the filter parameter: a stored filter ID or inline JSON.
func (s *Sync) loadFilter(ctx context.Context, user *accounts.Requester, param string) (*filter.Filter, error) {
	if param == "" {
		return &filter.Filter{}, nil
	}
	raw := []byte(param)
	if !strings.HasPrefix(strings.TrimSpace(param), "{") {
		id, err := strconv.ParseInt(param, 10, 64)
		if err != nil {
			return nil, mxerr.InvalidParam("filter must be a filter ID or a JSON object")
		}
		raw, err = s.db.Filter(ctx, user.Localpart(), id)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxerr.NotFound("No such filter")
		}
		if err != nil {
			return nil, err
		}
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, mxerr.BadJSON(err.Error())
	}
	return f, nil
}

// Tokens are "s<position>_<typing position>": the global stream, then the
// in-memory typing counter. Older tokens without the second part are read
// as typing position 0.
func parseToken(t string) (pos, typingPos int64, err error) {
	if !strings.HasPrefix(t, "s") {
		return 0, 0, errors.New("not a sync token")
	}
	num, rest, hasTyping := strings.Cut(t[1:], "_")
	pos, err = strconv.ParseInt(num, 10, 64)
	if err != nil || pos < 0 {
		return 0, 0, errors.New("not a sync token")
	}
	if hasTyping {
		rest, _, _ = strings.Cut(rest, "_")
		if typingPos, err = strconv.ParseInt(rest, 10, 64); err != nil || typingPos < 0 {
			return 0, 0, errors.New("not a sync token")
		}
	}
	return pos, typingPos, nil
}

func makeToken(pos, typingPos int64) string {
	return "s" + strconv.FormatInt(pos, 10) + "_" + strconv.FormatInt(typingPos, 10)
}

// Response is the /sync answer.
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       rooms          `json:"rooms"`
	AccountData eventList      `json:"account_data"`
	Presence    eventList      `json:"presence"`
	ToDevice    eventList      `json:"to_device"`
	DeviceLists deviceLists    `json:"device_lists"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count"`
	// FallbackKeyTypes lists the device's unused fallback key algorithms.
	FallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type eventList struct {
	Events []any `json:"events"`
}

type rooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type timeline struct {
	Events    []clientevent.Event `json:"events"`
	Limited   bool                `json:"limited"`
	PrevBatch string              `json:"prev_batch,omitempty"`
}

type stateEvents struct {
	Events []clientevent.Event `json:"events"`
}

type joinedRoom struct {
	Timeline            timeline     `json:"timeline"`
	State               stateEvents  `json:"state"`
	Ephemeral           eventList    `json:"ephemeral"`
	AccountData         eventList    `json:"account_data"`
	Summary             *summary     `json:"summary,omitempty"`
	UnreadNotifications unreadCounts `json:"unread_notifications"`
	// UnreadThreadNotifications is set when the filter asks for
	// unread_thread_notifications.
	UnreadThreadNotifications map[string]unreadCounts `json:"unread_thread_notifications,omitempty"`
}

type summary struct {
	Heroes       []string `json:"m.heroes,omitempty"`
	JoinedCount  int      `json:"m.joined_member_count"`
	InvitedCount int      `json:"m.invited_member_count"`
}

type unreadCounts struct {
	HighlightCount    int `json:"highlight_count"`
	NotificationCount int `json:"notification_count"`
}

type leftRoom struct {
	Timeline    timeline    `json:"timeline"`
	State       stateEvents `json:"state"`
	AccountData eventList   `json:"account_data"`
}

type strippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
}

type invitedRoom struct {
	InviteState struct {
		Events []strippedEvent `json:"events"`
	} `json:"invite_state"`
}

type knockedRoom struct {
	KnockState struct {
		Events []strippedEvent `json:"events"`
	} `json:"knock_state"`
}

// empty reports whether an incremental response carries nothing new.
func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.ToDevice.Events) == 0 && len(r.Presence.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}
