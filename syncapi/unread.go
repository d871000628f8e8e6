package syncapi

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/veche/veche/storage"
)

// unreadCache keeps each (room, user)'s unread counts between syncs, so
// that a sync counts only the events since the last one instead of every
// unread event again (a user who never reads a busy room would otherwise
// cost a scan of its whole unread history per sync).
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
	ignored               string
	counts                storage.Unread
}

// maxUnreadEntries bounds the cache; past it, it starts over.
const maxUnreadEntries = 100_000

func (c *unreadCache) counts(ctx context.Context, db *storage.DB, roomNID int64, userID string, joinPos, pos int64, ignored map[string]bool) (storage.Unread, error) {
	floor, receipts, err := db.UnreadFloor(ctx, roomNID, userID, joinPos, pos)
	if err != nil {
		return storage.Unread{}, err
	}
	ign := strings.Join(slices.Sorted(maps.Keys(ignored)), "\x00")
	k := unreadKey{roomNID, userID}
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && e.floor == floor && e.receipts == receipts && e.ignored == ign && e.upTo <= pos {
		more, err := db.CountUnread(ctx, roomNID, userID, max(floor, e.upTo), pos, ignored)
		if err != nil {
			return storage.Unread{}, err
		}
		e.counts = addUnread(e.counts, more)
	} else {
		if e.counts, err = db.CountUnread(ctx, roomNID, userID, floor, pos, ignored); err != nil {
			return storage.Unread{}, err
		}
	}
	e.floor, e.receipts, e.upTo, e.ignored = floor, receipts, pos, ign
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= maxUnreadEntries {
		c.entries = map[unreadKey]unreadEntry{}
	}
	c.entries[k] = e
	c.mu.Unlock()
	return e.counts, nil
}

func addUnread(a, b storage.Unread) storage.Unread {
	out := storage.Unread{Threads: maps.Clone(a.Threads)}
	if out.Threads == nil {
		out.Threads = map[string]storage.UnreadCount{}
	}
	out.Total.Notifications = a.Total.Notifications + b.Total.Notifications
	out.Total.Highlights = a.Total.Highlights + b.Total.Highlights
	out.Main.Notifications = a.Main.Notifications + b.Main.Notifications
	out.Main.Highlights = a.Main.Highlights + b.Main.Highlights
	for t, c := range b.Threads {
		cur := out.Threads[t]
		cur.Notifications += c.Notifications
		cur.Highlights += c.Highlights
		out.Threads[t] = cur
	}
	return out
}
