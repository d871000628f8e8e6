// Package sender delivers this server's PDUs and EDUs to other servers
// (spec: Server-Server API, "Transactions": PUT
// /_matrix/federation/v1/send/{txnId}).
//
// It consumes Veche's global stream like sync does. Woken on every write
// (stream.SubscribeAll, plus a slow safety poll), it reads the accepted
// events and public read receipts between its last position and the
// stream's current one, keeps those of local users, works out which
// servers need each one, and appends them to per-destination queues in
// the database in the same transaction that advances its position: a
// crash neither loses an event nor queues it twice.
//
// Each destination with queued work has one worker goroutine that sends
// transactions of up to 50 PDUs and 100 EDUs (the spec's limits) in queue
// order, deletes what was delivered, and backs off exponentially when the
// destination fails. Workers are independent, so a slow or dead server
// never delays another. Typing notifications are ephemeral: they are kept
// in memory only and ride along with the destination's next transaction.
package sender

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/storage"
)

// Spec limits of one transaction.
const (
	maxPDUs = 50
	maxEDUs = 100
	// maxTxnBytes keeps a transaction under the body limits receivers
	// set (Veche's default federation.max_request_bytes is 4 MiB).
	maxTxnBytes = 3 << 20
)

const (
	// consumerName is the sender's row in stream_consumers.
	consumerName = "federation_sender"
	// passLimit bounds the events (and the receipts) read in one pass
	// over the stream, so that a long backlog is worked through in
	// transactions of bounded size.
	passLimit = 500
	// positionFlush is how long a position that queued nothing may stay
	// unpersisted. Passes that queue something persist their position
	// atomically with the queue rows; the others only save re-reading a
	// range (which queues nothing again) after a crash, so they need not
	// cost a write each.
	positionFlush = 5 * time.Second
	// typingRefresh is how often a user who keeps typing is announced
	// again: receiving servers time typing out on their own (Synapse
	// after 60 s), while clients repeat their typing request every
	// 20–30 s.
	typingRefresh = 20 * time.Second
	// ephemeralTTL drops typing notifications that waited longer than
	// this (a destination in backoff): they would only be wrong by then.
	ephemeralTTL = 30 * time.Second
	// maxEphemeral bounds the in-memory EDUs waiting for one destination;
	// the oldest are dropped beyond it.
	maxEphemeral = 200
	// maxTypingQueue bounds typing changes waiting to be routed.
	maxTypingQueue = 10000
)

// Client sends one transaction; fclient.FederationClient satisfies it. A
// non-2xx answer is a gomatrix.HTTPError, which carries the status code.
type Client interface {
	SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error)
}

// Deps are what the sender needs.
type Deps struct {
	DB         *storage.DB
	Stream     *stream.Stream
	ServerName spec.ServerName
	Client     Client
	// DenyServers are server names or globs (federation.deny_servers)
	// that are never sent anything.
	DenyServers []string
	Log         logrus.FieldLogger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// After waits out a backoff (nil: time.After); tests pass a fake.
	After func(time.Duration) <-chan time.Time
	// MinBackoff and MaxBackoff bound the delay before retrying a failed
	// destination (defaults 1 s and 1 h); it doubles per failure.
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is the safety poll of the stream, in case a wake-up
	// was missed (default 5 s).
	PollInterval time.Duration
	// RequestTimeout bounds one transaction request (default 60 s).
	RequestTimeout time.Duration
	// MaxConcurrent bounds the transactions in flight over all
	// destinations (default 200). Each destination has at most one.
	MaxConcurrent int
}

// Sender is the outbound federation queue. Create it with New, then Start
// and eventually Stop it.
type Sender struct {
	db      *storage.DB
	st      *stream.Stream
	name    spec.ServerName
	client  Client
	deny    []string
	log     logrus.FieldLogger
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time
	minWait time.Duration
	maxWait time.Duration
	poll    time.Duration
	timeout time.Duration
	sem     chan struct{}
	// epoch makes transaction IDs unique across restarts: a receiver
	// remembers the IDs it processed and would skip a reused one.
	epoch string
	seq   atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// The consumer goroutine owns these.
	pos         int64 // read up to here
	persisted   int64 // last position written to the database
	persistedAt time.Time

	mu      sync.Mutex
	running bool // between Start and Stop
	dests   map[spec.ServerName]*destination

	typingMu   sync.Mutex
	typingQ    []typingChange
	typingSent map[[2]string]time.Time // (room, user) → when typing was last announced
	typingKick chan struct{}

	// passLimit bounds the events, and the receipts, read in one pass
	// over the stream (a constant but for tests).
	passLimit int
	// onPass, when set (tests), is called after each pass over the
	// stream with the position read up to.
	onPass func(pos int64)
}

type typingChange struct {
	roomID, userID string
	typing         bool
}

// New returns a sender; nothing runs until Start.
func New(d Deps) *Sender {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.After == nil {
		d.After = time.After
	}
	if d.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		d.Log = l
	}
	if d.MinBackoff <= 0 {
		d.MinBackoff = time.Second
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = time.Hour
	}
	if d.PollInterval <= 0 {
		d.PollInterval = 5 * time.Second
	}
	if d.RequestTimeout <= 0 {
		d.RequestTimeout = 60 * time.Second
	}
	if d.MaxConcurrent <= 0 {
		d.MaxConcurrent = 200
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &Sender{
		db: d.DB, st: d.Stream, name: d.ServerName, client: d.Client, deny: d.DenyServers, log: d.Log,
		now: d.Now, after: d.After, minWait: d.MinBackoff, maxWait: d.MaxBackoff, poll: d.PollInterval,
		timeout: d.RequestTimeout, sem: make(chan struct{}, d.MaxConcurrent),
		epoch: fmt.Sprintf("%d%s", d.Now().UnixMilli(), hex.EncodeToString(b)),
		dests: map[spec.ServerName]*destination{}, typingSent: map[[2]string]time.Time{},
		typingKick: make(chan struct{}, 1), passLimit: passLimit,
	}
}

// Start loads the sender's position and the destinations' backoff, starts
// a worker for every destination with queued work, and starts following
// the stream. ctx bounds only the start-up reads; the sender runs until
// Stop. On the very first start the position is the stream's current
// one: nothing from before federation was enabled is sent.
func (s *Sender) Start(ctx context.Context) error {
	pos, ok, err := s.db.ConsumerPosition(ctx, consumerName)
	if err != nil {
		return fmt.Errorf("sender: reading position: %w", err)
	}
	if !ok {
		pos = s.st.Current()
		if err := s.db.SetConsumerPosition(ctx, consumerName, pos); err != nil {
			return fmt.Errorf("sender: saving position: %w", err)
		}
	} else {
		// The position may be above every persisted row (the last
		// writes before a restart failed, leaving gaps); the stream
		// must not hand those numbers out again, or the sender would
		// skip the events that got them.
		s.st.AtLeast(pos)
	}
	s.pos, s.persisted, s.persistedAt = pos, pos, s.now()
	backoffs, err := s.db.FederationBackoffs(ctx)
	if err != nil {
		return fmt.Errorf("sender: reading backoff: %w", err)
	}
	queued, err := s.db.QueuedDestinations(ctx)
	if err != nil {
		return fmt.Errorf("sender: reading queues: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.running = true
	// A restart keeps the backoff: a server that was down an hour ago
	// is not hammered because we restarted. It ends early when the
	// server contacts us (Wake).
	for _, b := range backoffs {
		d := s.dest(spec.ServerName(b.Destination))
		d.failures, d.retryAt = b.Failures, time.UnixMilli(b.RetryAtTS)
	}
	for _, name := range queued {
		s.notifyLocked(spec.ServerName(name))
	}
	s.wg.Add(2)
	s.mu.Unlock()
	go s.consume()
	go s.typingLoop()
	s.log.WithField("position", pos).WithField("destinations", len(queued)).Info("Federation sender started")
	return nil
}

// Stop cancels requests in flight, waits for every worker and saves the
// position. It is safe to call more than once, and without Start.
func (s *Sender) Stop() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.pos != s.persisted {
		if err := s.db.SetConsumerPosition(ctx, consumerName, s.pos); err != nil {
			s.log.WithError(err).Warn("Saving the federation sender's position failed")
		}
	}
}

// consume follows the stream until Stop.
func (s *Sender) consume() {
	defer s.wg.Done()
	sub := s.st.SubscribeAll()
	defer sub.Close()
	poll := time.NewTicker(s.poll)
	defer poll.Stop()
	for {
		for {
			more, err := s.pass(s.ctx)
			if err != nil {
				if s.ctx.Err() == nil {
					s.log.WithError(err).Warn("Reading the stream for federation failed; will retry")
				}
				break
			}
			if !more {
				break
			}
		}
		select {
		case <-sub.C():
		case <-poll.C:
		case <-s.ctx.Done():
			return
		}
	}
}

// queuedPDU is an event to queue for some destinations.
type queuedPDU struct {
	eventNID int64
	dests    []string
}

// queuedEDU is a persistent EDU to queue for some destinations.
type queuedEDU struct {
	typ     string
	content []byte
	key     string
	dests   []string
}

// pass reads one stretch of the stream and queues what it holds for
// other servers. more reports that the stretch was cut short.
func (s *Sender) pass(ctx context.Context) (more bool, err error) {
	upTo := s.st.Current()
	if upTo <= s.pos {
		if s.pos != s.persisted && s.now().Sub(s.persistedAt) >= positionFlush {
			if err := s.db.SetConsumerPosition(ctx, consumerName, s.pos); err != nil {
				return false, err
			}
			s.persisted, s.persistedAt = s.pos, s.now()
		}
		return false, nil
	}
	from := s.pos
	evs, err := s.db.StreamEvents(ctx, from, upTo, s.passLimit)
	if err != nil {
		return false, err
	}
	if len(evs) == s.passLimit {
		upTo, more = evs[len(evs)-1].StreamPos, true
	}
	receipts, err := s.db.PublicReceiptsInRange(ctx, from, upTo, s.passLimit)
	if err != nil {
		return false, err
	}
	if len(receipts) == s.passLimit {
		upTo, more = min(upTo, receipts[len(receipts)-1].StreamPos), true
	}
	routes := map[int64][]string{}
	var pdus []queuedPDU
	for _, e := range evs {
		if e.StreamPos > upTo {
			break
		}
		if !s.isLocal(e.Sender) {
			continue
		}
		dests, err := s.eventDestinations(ctx, e, routes)
		if err != nil {
			return false, err
		}
		if len(dests) > 0 {
			pdus = append(pdus, queuedPDU{eventNID: e.NID, dests: dests})
		}
	}
	var edus []queuedEDU
	for _, r := range receipts {
		if !s.isLocal(r.UserID) {
			continue
		}
		dests, err := s.roomDestinations(ctx, r.RoomNID, routes)
		if err != nil {
			return false, err
		}
		if len(dests) > 0 {
			edus = append(edus, receiptEDU(r, dests))
		}
	}
	if len(pdus) == 0 && len(edus) == 0 {
		s.pos = upTo
		s.passDone()
		return more, nil
	}
	err = s.db.Transact(ctx, func(tx *storage.Tx) error {
		for _, p := range pdus {
			if err := tx.QueuePDU(ctx, p.eventNID, p.dests); err != nil {
				return err
			}
		}
		for _, e := range edus {
			if err := tx.QueueEDU(ctx, e.dests, e.typ, e.content, e.key); err != nil {
				return err
			}
		}
		return tx.SetConsumerPosition(ctx, consumerName, upTo)
	})
	if err != nil {
		return false, err
	}
	s.pos, s.persisted, s.persistedAt = upTo, upTo, s.now()
	touched := map[string]bool{}
	for _, p := range pdus {
		for _, d := range p.dests {
			touched[d] = true
		}
	}
	for _, e := range edus {
		for _, d := range e.dests {
			touched[d] = true
		}
	}
	s.mu.Lock()
	for d := range touched {
		s.notifyLocked(spec.ServerName(d))
	}
	s.mu.Unlock()
	s.log.WithField("from", from).WithField("to", upTo).WithField("pdus", len(pdus)).WithField("edus", len(edus)).
		Debug("Queued events for federation")
	s.passDone()
	return more, nil
}

func (s *Sender) passDone() {
	if s.onPass != nil {
		s.onPass(s.pos)
	}
}

// eventDestinations are the servers an event goes to: those with a user
// joined to the room now, and for a member event the server of its
// target, so that a server whose last user was kicked, banned or left
// (or whose invite was withdrawn) learns of it. Invites themselves reach
// the invitee's server through the invite API, which it must sign.
func (s *Sender) eventDestinations(ctx context.Context, e storage.StreamEvent, routes map[int64][]string) ([]string, error) {
	dests, err := s.roomDestinations(ctx, e.RoomNID, routes)
	if err != nil {
		return nil, err
	}
	if e.Type != spec.MRoomMember || e.StateKey == nil || e.Membership == spec.Invite {
		return dests, nil
	}
	target := serverOf(*e.StateKey)
	if target == "" || target == string(s.name) || s.denied(target) {
		return dests, nil
	}
	for _, d := range dests {
		if d == target {
			return dests, nil
		}
	}
	// The room's ACL applies to the target too: a server denied by it
	// takes no part in the room.
	acl, err := s.roomACL(ctx, e.RoomNID)
	if err != nil {
		return nil, err
	}
	if acl != nil && !acl.allows(target) {
		return dests, nil
	}
	return append(append([]string(nil), dests...), target), nil
}

// roomDestinations are the other servers with a user joined to the room,
// minus denied ones, cached in routes for one pass.
func (s *Sender) roomDestinations(ctx context.Context, roomNID int64, routes map[int64][]string) ([]string, error) {
	if d, ok := routes[roomNID]; ok {
		return d, nil
	}
	servers, err := s.db.JoinedServers(ctx, roomNID)
	if err != nil {
		return nil, err
	}
	var out []string
	var acl *serverACL
	aclRead := false
	for _, srv := range servers {
		if srv == string(s.name) || s.denied(srv) {
			continue
		}
		if !aclRead {
			if acl, err = s.roomACL(ctx, roomNID); err != nil {
				return nil, err
			}
			aclRead = true
		}
		if acl != nil && !acl.allows(srv) {
			continue
		}
		out = append(out, srv)
	}
	if routes != nil {
		routes[roomNID] = out
	}
	return out, nil
}

// roomACL reads the room's current m.room.server_acl; nil when there is
// none (everyone is allowed).
func (s *Sender) roomACL(ctx context.Context, roomNID int64) (*serverACL, error) {
	rows, err := s.db.RoomLevelState(ctx, []int64{roomNID}, []string{"m.room.server_acl"})
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(rows[0].JSON, &ev)
	return parseACL(ev.Content), nil
}

// receiptEDU is one m.receipt EDU for one receipt (spec: Server-Server
// API, "Receipts"). A newer receipt of the same user, room and thread
// replaces it while it waits, as receipts mean "read up to".
func receiptEDU(r storage.RoomReceipt, dests []string) queuedEDU {
	data := map[string]any{"ts": r.TS}
	if r.ThreadID != "" {
		data["thread_id"] = r.ThreadID
	}
	content, _ := json.Marshal(map[string]any{
		r.RoomID: map[string]any{
			"m.read": map[string]any{
				r.UserID: map[string]any{"event_ids": []string{r.EventID}, "data": data},
			},
		},
	})
	key, _ := json.Marshal([]string{spec.MReceipt, r.RoomID, r.UserID, r.ThreadID})
	return queuedEDU{typ: spec.MReceipt, content: content, key: string(key), dests: dests}
}

// QueueEDU sends an EDU to the destinations (this server and denied ones
// are left out). A persistent EDU is stored until delivered, through
// restarts; an ephemeral one (persistent false, for typing-like data) is
// kept in memory and dropped if it cannot be sent within half a minute.
// Call it after Start.
func (s *Sender) QueueEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU, persistent bool) error {
	var dests []string
	for _, d := range destinations {
		if d != s.name && d != "" && !s.denied(string(d)) {
			dests = append(dests, string(d))
		}
	}
	if len(dests) == 0 {
		return nil
	}
	if persistent {
		if err := s.db.QueueEDU(ctx, dests, edu.Type, edu.Content, ""); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range dests {
		if !persistent {
			s.dest(spec.ServerName(name)).addEphemeral(edu, "", s.now())
		}
		s.notifyLocked(spec.ServerName(name))
	}
	return nil
}

// OnTyping is the typing tracker's listener (typing.Tracker.Listen): it
// announces local users' typing to the other servers in the room. It
// never blocks; routing happens on the sender's own goroutine.
func (s *Sender) OnTyping(roomID, userID string, typing bool) {
	if !s.isLocal(userID) {
		return
	}
	key := [2]string{roomID, userID}
	s.typingMu.Lock()
	now := s.now()
	last, announced := s.typingSent[key]
	switch {
	case typing && announced && now.Sub(last) < typingRefresh:
		s.typingMu.Unlock()
		return
	case typing:
		s.typingSent[key] = now
	case !announced:
		// The start was never announced (before Start, or dropped):
		// nobody needs to hear of the stop.
		s.typingMu.Unlock()
		return
	default:
		delete(s.typingSent, key)
	}
	if len(s.typingQ) >= maxTypingQueue {
		s.typingMu.Unlock()
		s.log.WithField("room_id", roomID).Warn("Typing notification dropped: federation typing queue full")
		return
	}
	s.typingQ = append(s.typingQ, typingChange{roomID: roomID, userID: userID, typing: typing})
	s.typingMu.Unlock()
	select {
	case s.typingKick <- struct{}{}:
	default:
	}
}

// typingLoop routes typing changes to the rooms' servers.
func (s *Sender) typingLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.typingKick:
		case <-s.ctx.Done():
			return
		}
		s.typingMu.Lock()
		changes := s.typingQ
		s.typingQ = nil
		s.typingMu.Unlock()
		routes := map[int64][]string{}
		for _, c := range changes {
			if err := s.routeTyping(s.ctx, c, routes); err != nil && s.ctx.Err() == nil {
				s.log.WithError(err).WithField("room_id", c.roomID).Warn("Routing a typing notification failed")
			}
		}
	}
}

func (s *Sender) routeTyping(ctx context.Context, c typingChange, routes map[int64][]string) error {
	room, err := s.db.RoomByID(ctx, c.roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	dests, err := s.roomDestinations(ctx, room.NID, routes)
	if err != nil || len(dests) == 0 {
		return err
	}
	content, _ := json.Marshal(map[string]any{"room_id": c.roomID, "user_id": c.userID, "typing": c.typing})
	edu := gomatrixserverlib.EDU{Type: spec.MTyping, Content: content}
	// Only the latest state of a user in a room matters.
	key := c.roomID + "\x00" + c.userID
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range dests {
		s.dest(spec.ServerName(name)).addEphemeral(edu, key, s.now())
		s.notifyLocked(spec.ServerName(name))
	}
	return nil
}

// isLocal tells whether a user ID belongs to this server.
func (s *Sender) isLocal(userID string) bool { return serverOf(userID) == string(s.name) }

// serverOf is the server name of a user ID: everything after the first
// colon (localparts have none; the server name may have a port).
func serverOf(userID string) string {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return ""
	}
	return server
}
