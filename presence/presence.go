// Package presence tracks whether users are online (spec: "Presence"),
// for local users from what their clients do and for remote users from
// their servers' m.presence EDUs.
//
// The latest presence of every user is stored (presence_users). A change
// that clients must hear of — of the state, the status message or
// currently_active — takes a position in the global stream and wakes the
// users who share a room with the user, so that /sync delivers it as an
// m.presence event; other updates (a newer last active time) are stored
// without one, since last_active_ago is computed on every read.
//
// Local users follow these rules, which are Synapse's, simplified:
//   - A sync (set_presence online, the default) brings an offline user
//     online; set_presence=unavailable marks them unavailable; offline
//     leaves their presence alone. A sync does not end an unavailable
//     state: the user did nothing, their client only listens.
//   - PUT /presence sets the state and status message and counts as
//     activity (spec: "the activity time is updated").
//   - Sending an event counts as activity: it brings an unavailable user
//     back online (spec: "Idle timeout").
//   - An online user inactive for IdleTimeout becomes unavailable.
//   - A user none of whose clients has synced or set presence for
//     SyncTimeout becomes offline; a long-poll in progress counts as
//     syncing. After a restart every user gets SyncTimeout from the start.
//
// currently_active is true exactly when a local user is online: every way
// of coming online is activity, and inactivity ends the online state
// within IdleTimeout, so clients may take "online" as "active lately".
//
// Local changes are sent as m.presence EDUs to the servers sharing a room
// with the user, when clients are told of them and every FederationPing
// while the user stays online, so that remote servers (which time silent
// users out) keep them online. The EDUs are ephemeral: a server that is
// down misses them. Remote users of whom their server said nothing for
// RemoteTimeout become offline here.
//
// With presence.enabled off, presence is not tracked (Synapse's
// use_presence): PUT is accepted and ignored, GET answers offline, sync
// carries no presence and nothing is sent or accepted over federation.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/storage"
)

// The presence states (spec enum).
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// EventType is the type of presence events and EDUs.
const EventType = "m.presence"

const (
	// IdleTimeout makes an online local user without activity
	// unavailable (the spec's example threshold).
	IdleTimeout = 5 * time.Minute
	// SyncTimeout makes a local user whose clients stopped syncing
	// offline.
	SyncTimeout = 5 * time.Minute
	// RemoteTimeout makes a remote user offline when their server has
	// not said anything of them for this long. Servers repeat the
	// presence of online users (Synapse every 25 minutes, Veche every
	// FederationPing).
	RemoteTimeout = 30 * time.Minute
	// FederationPing is how often an online local user's presence is sent
	// again to the servers sharing a room with them.
	FederationPing = 10 * time.Minute
	// activeGranularity is how stale the stored last active time of an
	// online user may get before activity writes it (Synapse's
	// LAST_ACTIVE_GRANULARITY): clients are not told of it anyway while
	// the user stays online (currently_active), so a write per message
	// would buy nothing.
	activeGranularity = time.Minute
	// sweepInterval is how often the timeouts are checked.
	sweepInterval = 30 * time.Second
	// MaxStatusMsgBytes caps a status message. The spec sets no limit;
	// this is long enough for any sentence and keeps the events small.
	MaxStatusMsgBytes = 1024
	// maxPushPerEDU bounds the users of one inbound EDU that are looked
	// at: a transaction has at most 100 EDUs, and each user costs queries.
	maxPushPerEDU = 1000
	// lockStripes is how many locks serialize changes of users' presence
	// (by a hash of the user ID).
	lockStripes = 64
)

// ValidState reports whether s is a presence state of the spec.
func ValidState(s string) bool { return s == Online || s == Unavailable || s == Offline }

// EDUQueue sends EDUs to other servers; federation/sender.Sender is one.
type EDUQueue interface {
	QueueEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU, persistent bool) error
}

// Deps are what presence needs.
type Deps struct {
	DB         *storage.DB
	Stream     *stream.Stream
	ServerName spec.ServerName
	// Enabled is presence.enabled.
	Enabled bool
	Log     logrus.FieldLogger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Presence is the presence tracker. Create it with New, set EDUs when
// federation is on, and run Run in the background.
type Presence struct {
	db      *storage.DB
	st      *stream.Stream
	name    spec.ServerName
	enabled bool
	log     logrus.FieldLogger
	now     func() time.Time
	started time.Time

	// EDUs sends local users' presence to other servers; nil when
	// federation is off. Set it before the server serves requests.
	EDUs EDUQueue

	// locks serialize the read-modify-write of one user's presence.
	locks [lockStripes]sync.Mutex

	mu sync.Mutex
	// local caches local users' rows: this process is their only writer.
	local map[string]storage.Presence
	// syncing counts each local user's syncs in progress; lastSync is
	// when the last one ended (or presence was set).
	syncing  map[string]int
	lastSync map[string]time.Time
	// lastSent is when a local user's presence last went to other
	// servers.
	lastSent map[string]time.Time
}

// New returns the presence tracker.
func New(d Deps) *Presence {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		d.Log = l
	}
	return &Presence{
		db: d.DB, st: d.Stream, name: d.ServerName, enabled: d.Enabled, log: d.Log, now: d.Now, started: d.Now(),
		local: map[string]storage.Presence{}, syncing: map[string]int{}, lastSync: map[string]time.Time{},
		lastSent: map[string]time.Time{},
	}
}

// Enabled reports whether presence is tracked (presence.enabled).
func (p *Presence) Enabled() bool { return p.enabled }

// IsLocal reports whether a user ID is of this server.
func (p *Presence) IsLocal(userID string) bool { return serverOf(userID) == string(p.name) }

// Content is the content of an m.presence event, and the answer of GET
// /presence/{userId}/status.
type Content struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// Event is an m.presence event as sync gives it.
type Event struct {
	Type    string  `json:"type"`
	Sender  string  `json:"sender"`
	Content Content `json:"content"`
}

// content renders a row as of now: last_active_ago is always current
// (spec: "The last active time must be up to date whenever the server
// gives a presence event to the client").
func (p *Presence) content(r storage.Presence, now time.Time) Content {
	c := Content{Presence: r.Presence, StatusMsg: r.StatusMsg}
	if r.LastActiveTS > 0 {
		ago := max(now.UnixMilli()-r.LastActiveTS, 0)
		c.LastActiveAgo = &ago
	}
	active := r.CurrentlyActive
	c.CurrentlyActive = &active
	return c
}

// Get returns a user's presence: offline when nothing is known of them.
// Whether the caller may see it is the caller's business.
func (p *Presence) Get(ctx context.Context, userID string) (Content, error) {
	if !p.enabled {
		return Content{Presence: Offline}, nil
	}
	// Under the user's lock: load fills the cache, which must not take a
	// row older than one a concurrent change stores.
	l := p.lock(userID)
	l.Lock()
	r, err := p.load(ctx, userID)
	l.Unlock()
	if err != nil {
		return Content{}, err
	}
	if r.StreamPos == 0 && r.UpdatedTS == 0 {
		return Content{Presence: Offline}, nil // never stored
	}
	return p.content(r, p.now()), nil
}

// Since returns the m.presence events sync gives forUser for (after,
// upTo]: the changes of their own presence and of the users sharing a
// room with them, the latest per user.
func (p *Presence) Since(ctx context.Context, forUser string, after, upTo int64) ([]Event, error) {
	if !p.enabled {
		return nil, nil
	}
	rows, err := p.db.PresenceSince(ctx, forUser, after, upTo)
	if err != nil {
		return nil, err
	}
	now := p.now()
	out := make([]Event, 0, len(rows))
	for _, r := range rows {
		out = append(out, Event{Type: EventType, Sender: r.UserID, Content: p.content(r, now)})
	}
	return out, nil
}

// Set is PUT /presence/{userId}/status for a local user: the state and
// status message (nil clears it) replace what was there, and the user
// counts as active. The caller checks the state and the message's length.
func (p *Presence) Set(ctx context.Context, userID, state string, statusMsg *string) error {
	if !p.enabled {
		return nil
	}
	if !ValidState(state) {
		return errors.New("presence: invalid state " + state)
	}
	p.mu.Lock()
	p.lastSync[userID] = p.now()
	p.mu.Unlock()
	return p.change(ctx, userID, nil, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
		next := cur
		next.Presence, next.StatusMsg = state, statusMsg
		next.LastActiveTS = now.UnixMilli()
		next.CurrentlyActive = state == Online
		return next, true
	})
}

// Syncing tells presence that a local user's client syncs with the given
// set_presence ("" means online), and returns the function to call when
// the sync ends. See the package comment for what it changes.
func (p *Presence) Syncing(ctx context.Context, userID, setPresence string) (done func(), err error) {
	if setPresence == "" {
		setPresence = Online
	}
	if !p.enabled || setPresence == Offline {
		return func() {}, nil
	}
	p.mu.Lock()
	p.syncing[userID]++
	p.mu.Unlock()
	done = func() {
		p.mu.Lock()
		if p.syncing[userID]--; p.syncing[userID] <= 0 {
			delete(p.syncing, userID)
		}
		p.lastSync[userID] = p.now()
		p.mu.Unlock()
	}
	err = p.change(ctx, userID, nil, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
		next := cur
		switch {
		case setPresence == Online && cur.Presence == Offline:
			next.Presence, next.CurrentlyActive, next.LastActiveTS = Online, true, now.UnixMilli()
		case setPresence == Unavailable && cur.Presence != Unavailable:
			next.Presence, next.CurrentlyActive = Unavailable, false
		default:
			return cur, false
		}
		return next, true
	})
	if err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// Active records activity of a local user (they sent an event): it
// brings an unavailable user back online and moves their last active
// time. An offline user stays offline (they have no client listening).
func (p *Presence) Active(ctx context.Context, userID string) error {
	if !p.enabled {
		return nil
	}
	return p.change(ctx, userID, nil, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
		next := cur
		switch cur.Presence {
		case Unavailable:
			next.Presence, next.CurrentlyActive = Online, true
		case Online:
			if now.UnixMilli()-cur.LastActiveTS < activeGranularity.Milliseconds() {
				return cur, false
			}
		default:
			return cur, false
		}
		next.LastActiveTS = now.UnixMilli()
		return next, true
	})
}

// pushItem is one user's presence in an m.presence EDU.
type pushItem struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   *int64  `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
}

// Receive applies an inbound m.presence EDU from origin. Users not of
// origin, or sharing no room with a local user, are skipped: a server
// may only speak for its own users, and to servers that have a reason to
// listen (spec: "Servers should only send presence updates for users
// that the receiving server would be interested in").
func (p *Presence) Receive(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	if !p.enabled {
		return nil
	}
	var c struct {
		Push []json.RawMessage `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if len(c.Push) > maxPushPerEDU {
		c.Push = c.Push[:maxPushPerEDU]
	}
	log := p.log.WithField("origin", origin)
	var firstErr error
	for _, raw := range c.Push {
		var item pushItem
		if err := json.Unmarshal(raw, &item); err != nil || !ValidState(item.Presence) {
			log.Debug("Skipping a malformed presence update")
			continue
		}
		uid, err := spec.NewUserID(item.UserID, true)
		if err != nil || uid.Domain() != origin {
			log.WithField("user_id", item.UserID).Debug("Skipping a presence update for a user not of the origin server")
			continue
		}
		sharers, err := p.db.UsersSharingRoom(ctx, item.UserID)
		if err != nil {
			firstErr = firstOf(firstErr, err)
			continue
		}
		if !p.anyLocal(sharers) {
			log.WithField("user_id", item.UserID).Debug("Skipping a presence update for a user sharing no room with this server")
			continue
		}
		err = p.change(ctx, item.UserID, sharers, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
			next := cur
			next.Presence, next.StatusMsg = item.Presence, truncate(item.StatusMsg)
			next.CurrentlyActive = item.CurrentlyActive
			next.LastActiveTS = 0
			if item.LastActiveAgo != nil {
				next.LastActiveTS = now.UnixMilli() - max(*item.LastActiveAgo, 0)
			}
			return next, true
		})
		firstErr = firstOf(firstErr, err)
	}
	return firstErr
}

// firstOf keeps the first error of a loop that goes on after errors.
func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// truncate cuts a remote status message to MaxStatusMsgBytes, at a
// character boundary.
func truncate(msg *string) *string {
	if msg == nil || len(*msg) <= MaxStatusMsgBytes {
		return msg
	}
	n := MaxStatusMsgBytes
	for n > 0 && !utf8.RuneStart((*msg)[n]) {
		n--
	}
	s := (*msg)[:n]
	return &s
}

// Run checks the timeouts every sweepInterval until ctx ends.
func (p *Presence) Run(ctx context.Context) {
	if !p.enabled {
		return
	}
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.Sweep(ctx); err != nil && ctx.Err() == nil {
			p.log.WithError(err).Warn("Presence sweep failed")
		}
	}
}

// Sweep applies the timeouts once: idle local users become unavailable,
// local users who stopped syncing and silent remote users offline, and
// online local users whose presence went out over federation longer
// than FederationPing ago are announced again.
func (p *Presence) Sweep(ctx context.Context) error {
	if !p.enabled {
		return nil
	}
	rows, err := p.db.PresentUsers(ctx)
	if err != nil {
		return err
	}
	var firstErr error
	now := p.now()
	for _, r := range rows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		user := r.UserID
		if !p.IsLocal(user) {
			if now.Sub(time.UnixMilli(r.UpdatedTS)) < RemoteTimeout {
				continue // the common case, decided without a query
			}
			err := p.change(ctx, user, nil, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
				if cur.Presence == Offline || now.Sub(time.UnixMilli(cur.UpdatedTS)) < RemoteTimeout {
					return cur, false
				}
				next := cur
				next.Presence, next.CurrentlyActive = Offline, false
				return next, true
			})
			firstErr = firstOf(firstErr, err)
			continue
		}
		// The row may be older than the cache; change looks again under
		// the user's lock.
		err := p.change(ctx, user, nil, func(cur storage.Presence, now time.Time) (storage.Presence, bool) {
			next := cur
			if cur.Presence == Online && now.Sub(time.UnixMilli(cur.LastActiveTS)) >= IdleTimeout {
				next.Presence, next.CurrentlyActive = Unavailable, false
			}
			if cur.Presence != Offline && !p.isSyncing(user, now) {
				next.Presence, next.CurrentlyActive = Offline, false
			}
			if next.Presence == cur.Presence {
				return cur, false
			}
			return next, true
		})
		if err != nil {
			firstErr = firstOf(firstErr, err)
			continue
		}
		firstErr = firstOf(firstErr, p.ping(ctx, user))
	}
	return firstErr
}

// ping announces an online local user again when their presence last
// went out over federation longer than FederationPing ago.
func (p *Presence) ping(ctx context.Context, user string) error {
	if p.EDUs == nil {
		return nil
	}
	l := p.lock(user)
	l.Lock()
	defer l.Unlock()
	now := p.now()
	p.mu.Lock()
	cur, cached := p.local[user]
	last, sent := p.lastSent[user]
	p.mu.Unlock()
	if !sent {
		last = p.started
	}
	if !cached || cur.Presence != Online || now.Sub(last) < FederationPing {
		return nil
	}
	sharers, err := p.db.UsersSharingRoom(ctx, user)
	if err != nil {
		return err
	}
	p.announce(ctx, cur, sharers, now)
	return nil
}

// isSyncing reports whether a local user has a sync in progress or ended
// one (or set presence) within SyncTimeout.
func (p *Presence) isSyncing(user string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.syncing[user] > 0 {
		return true
	}
	last, ok := p.lastSync[user]
	if !ok {
		last = p.started
	}
	return now.Sub(last) < SyncTimeout
}

func (p *Presence) lock(user string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	return &p.locks[h.Sum32()%lockStripes]
}

// load returns a user's stored presence; a never-stored user is offline
// with zero StreamPos and UpdatedTS. The user's lock is held.
func (p *Presence) load(ctx context.Context, user string) (storage.Presence, error) {
	local := p.IsLocal(user)
	if local {
		p.mu.Lock()
		r, ok := p.local[user]
		p.mu.Unlock()
		if ok {
			return r, nil
		}
	}
	r, err := p.db.UserPresence(ctx, user)
	if errors.Is(err, storage.ErrNotFound) {
		r, err = storage.Presence{UserID: user, Presence: Offline}, nil
	}
	if err != nil {
		return r, err
	}
	if local {
		p.mu.Lock()
		p.local[user] = r
		p.mu.Unlock()
	}
	return r, nil
}

// change runs fn on a user's current presence, under the user's lock,
// and stores what it returns when it says so. A change that clients must
// hear of takes a stream position, wakes the users sharing a room with
// the user (sharers; looked up when nil) and, for a local user, goes to
// their servers.
func (p *Presence) change(ctx context.Context, user string, sharers []string,
	fn func(cur storage.Presence, now time.Time) (storage.Presence, bool)) error {
	l := p.lock(user)
	l.Lock()
	defer l.Unlock()
	cur, err := p.load(ctx, user)
	if err != nil {
		return err
	}
	now := p.now()
	next, write := fn(cur, now)
	if !write {
		return nil
	}
	next.UserID, next.UpdatedTS = user, now.UnixMilli()
	if !newsFor(cur, next) {
		// Nothing for clients: keep the row's position.
		if err := p.db.PutPresence(ctx, next); err != nil {
			return err
		}
		p.cache(next)
		return nil
	}
	if sharers == nil {
		if sharers, err = p.db.UsersSharingRoom(ctx, user); err != nil {
			return err
		}
	}
	wake := sharers
	if !containsString(wake, user) {
		wake = append(append([]string(nil), sharers...), user)
	}
	err = p.st.Write(1, wake, func(pos int64) error {
		next.StreamPos = pos
		return p.db.PutPresence(ctx, next)
	})
	if err != nil {
		return err
	}
	p.cache(next)
	if p.IsLocal(user) {
		p.announce(ctx, next, sharers, now)
	}
	return nil
}

func (p *Presence) cache(r storage.Presence) {
	if !p.IsLocal(r.UserID) {
		return
	}
	p.mu.Lock()
	p.local[r.UserID] = r
	p.mu.Unlock()
}

// newsFor reports whether clients must be told of the change from a to
// b: last_active_ago alone is not news (spec: currently_active).
func newsFor(a, b storage.Presence) bool {
	if a.StreamPos == 0 {
		return true // never told
	}
	if a.Presence != b.Presence || a.CurrentlyActive != b.CurrentlyActive {
		return true
	}
	if (a.StatusMsg == nil) != (b.StatusMsg == nil) {
		return true
	}
	return a.StatusMsg != nil && *a.StatusMsg != *b.StatusMsg
}

// announce sends a local user's presence to the other servers of the
// users sharing a room with them. Presence is ephemeral: a failure is
// logged, and the next change or ping says it again.
func (p *Presence) announce(ctx context.Context, r storage.Presence, sharers []string, now time.Time) {
	if p.EDUs == nil {
		return
	}
	seen := map[string]bool{string(p.name): true}
	var dests []spec.ServerName
	for _, u := range sharers {
		if s := serverOf(u); s != "" && !seen[s] {
			seen[s] = true
			dests = append(dests, spec.ServerName(s))
		}
	}
	p.mu.Lock()
	p.lastSent[r.UserID] = now
	p.mu.Unlock()
	if len(dests) == 0 {
		return
	}
	c := p.content(r, now)
	item := pushItem{UserID: r.UserID, Presence: r.Presence, StatusMsg: r.StatusMsg, CurrentlyActive: r.CurrentlyActive,
		LastActiveAgo: c.LastActiveAgo}
	if item.LastActiveAgo == nil {
		zero := int64(0) // required on the wire
		item.LastActiveAgo = &zero
	}
	content, err := json.Marshal(map[string]any{"push": []pushItem{item}})
	if err != nil {
		return
	}
	if err := p.EDUs.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: EventType, Content: content}, false); err != nil {
		p.log.WithError(err).WithField("user_id", r.UserID).Warn("Queueing a presence EDU failed")
	}
}

func (p *Presence) anyLocal(users []string) bool {
	for _, u := range users {
		if p.IsLocal(u) {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// serverOf is the server name of a user ID: everything after the first
// colon (localparts have none; the server name may have a port).
func serverOf(userID string) string {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return ""
	}
	return server
}
