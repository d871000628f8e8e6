package syncapi

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/pushrules"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// unreadCache keeps each (room, user)'s unread counts between syncs, so
// that a sync evaluates only the events since the last one instead of
// every unread event again (a user who never reads a busy room would
// otherwise cost a scan of its whole unread history per sync).
type unreadCache struct {
	mu      sync.Mutex
	entries map[unreadKey]unreadEntry
}

type unreadKey struct {
	room int64
	user string
}

type unreadEntry struct {
	floor, receipts, upTo int64
	// fingerprint covers what else changes the counts: ignored users and
	// push rules.
	fingerprint string
	counts      storage.Unread
}

// maxUnreadEntries bounds the cache; past it, it starts over.
const maxUnreadEntries = 100_000

// unreadInput is what a sync knows once for all its rooms.
type unreadInput struct {
	userID  string
	ignored map[string]bool
	rules   pushrules.Ruleset
	// rulesRaw fingerprints the rules for the cache.
	rulesRaw string
}

func (c *unreadCache) counts(ctx context.Context, s *Sync, room storage.Room, in *unreadInput, joinPos, pos int64) (storage.Unread, error) {
	floor, receipts, err := s.db.UnreadFloor(ctx, room.NID, in.userID, joinPos, pos)
	if err != nil {
		return storage.Unread{}, err
	}
	fp := strings.Join(slices.Sorted(maps.Keys(in.ignored)), "\x00") + "\x01" + in.rulesRaw
	k := unreadKey{room.NID, in.userID}
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	from := floor
	base := storage.Unread{Threads: map[string]storage.UnreadCount{}}
	if ok && e.floor == floor && e.receipts == receipts && e.fingerprint == fp && e.upTo <= pos {
		from, base = max(floor, e.upTo), e.counts
	}
	more, err := s.evaluateUnread(ctx, room, in, from, pos)
	if err != nil {
		return storage.Unread{}, err
	}
	e = unreadEntry{floor: floor, receipts: receipts, upTo: pos, fingerprint: fp, counts: addUnread(base, more)}
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= maxUnreadEntries {
		c.entries = map[unreadKey]unreadEntry{}
	}
	c.entries[k] = e
	c.mu.Unlock()
	return e.counts, nil
}

// evaluateUnread runs the user's push rules over the events in (after,
// upTo] that no receipt covers (spec: "Receiving notifications"): a
// notify action counts a notification, a highlight tweak a highlight.
func (s *Sync) evaluateUnread(ctx context.Context, room storage.Room, in *unreadInput, after, upTo int64) (storage.Unread, error) {
	out := storage.Unread{Threads: map[string]storage.UnreadCount{}}
	if after >= upTo {
		return out, nil
	}
	rows, err := s.db.UnreadCandidates(ctx, room.NID, in.userID, after, upTo)
	if err != nil || len(rows) == 0 {
		return out, err
	}
	receipts, err := s.db.ThreadReceipts(ctx, room.NID, in.userID)
	if err != nil {
		return out, err
	}
	evalCtx, err := s.pushContext(ctx, room, in.userID)
	if err != nil {
		return out, err
	}
	for _, r := range rows {
		if in.ignored[r.Sender] {
			continue
		}
		thread := ""
		readUpTo := receipts["main"]
		if r.RelType == "m.thread" {
			thread, readUpTo = r.RelatesTo, receipts[r.RelatesTo]
		}
		if r.StreamPos <= readUpTo {
			continue
		}
		ev, err := pushrules.NewEvent(r.JSON)
		if err != nil {
			continue
		}
		notify, highlight, _ := pushrules.Evaluate(in.rules, ev, evalCtx(r.Sender))
		if !notify {
			continue
		}
		c := storage.UnreadCount{Notifications: 1}
		if highlight {
			c.Highlights = 1
		}
		out.Total = sumCounts(out.Total, c)
		if thread == "" {
			out.Main = sumCounts(out.Main, c)
		} else {
			out.Threads[thread] = sumCounts(out.Threads[thread], c)
		}
	}
	return out, nil
}

// pushContext gathers what push rule conditions read of a room: its joined
// member count, the user's display name there, and the power levels for
// sender_notification_permission.
func (s *Sync) pushContext(ctx context.Context, room storage.Room, userID string) (func(sender string) pushrules.EvalContext, error) {
	// All of it derives from the room's state: cache it by state snapshot.
	key := pushContextKey{room.StateNID, userID}
	s.pushCtxMu.Lock()
	pc, ok := s.pushCtx[key]
	s.pushCtxMu.Unlock()
	if !ok {
		var err error
		if pc, err = s.loadPushContext(ctx, room, userID); err != nil {
			return nil, err
		}
		s.pushCtxMu.Lock()
		if s.pushCtx == nil || len(s.pushCtx) >= maxUnreadEntries {
			s.pushCtx = map[pushContextKey]pushContextData{}
		}
		s.pushCtx[key] = pc
		s.pushCtxMu.Unlock()
	}
	return func(sender string) pushrules.EvalContext {
		return pushrules.EvalContext{
			UserID: userID, DisplayName: pc.displayName, MemberCount: pc.joined,
			SenderNotificationPermission: func(key string) bool { return senderMay(pc.pl, sender, key) },
		}
	}, nil
}

type pushContextKey struct {
	stateNID int64
	userID   string
}

type pushContextData struct {
	joined      int
	displayName string
	pl          *roomserver.PowerLevels
}

func (s *Sync) loadPushContext(ctx context.Context, room storage.Room, userID string) (pushContextData, error) {
	members, err := s.db.Members(ctx, room.NID)
	if err != nil {
		return pushContextData{}, err
	}
	joined := 0
	var own int64
	for _, m := range members {
		if m.Membership == spec.Join {
			joined++
		}
		if m.UserID == userID {
			own = m.EventNID
		}
	}
	displayName := ""
	if own != 0 {
		if evs, err := s.rs.Events(ctx, room, []int64{own}); err == nil && len(evs) == 1 {
			var c struct {
				DisplayName string `json:"displayname"`
			}
			_ = json.Unmarshal(evs[0].Content(), &c)
			displayName = c.DisplayName
		}
	}
	pl, err := s.rs.PowerLevels(ctx, room, room.StateNID)
	if err != nil {
		return pushContextData{}, err
	}
	return pushContextData{joined: joined, displayName: displayName, pl: pl}, nil
}

func senderMay(pl *roomserver.PowerLevels, sender, key string) bool {
	return pl.UserLevel(sender) >= pl.NotificationLevel(key)
}

func sumCounts(a, b storage.UnreadCount) storage.UnreadCount {
	return storage.UnreadCount{Notifications: a.Notifications + b.Notifications, Highlights: a.Highlights + b.Highlights}
}

func addUnread(a, b storage.Unread) storage.Unread {
	out := storage.Unread{Threads: maps.Clone(a.Threads), Total: sumCounts(a.Total, b.Total), Main: sumCounts(a.Main, b.Main)}
	if out.Threads == nil {
		out.Threads = map[string]storage.UnreadCount{}
	}
	for t, c := range b.Threads {
		out.Threads[t] = sumCounts(out.Threads[t], c)
	}
	return out
}
