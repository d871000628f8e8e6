package roomserver

import (
	"container/list"
	"sync"
)

// eventCacheSize bounds the parsed events kept in memory. Parsing an event
// (JSON, hashes, the room version's rules) costs tens of microseconds, and
// sync, /messages and visibility checks read the same recent events again
// and again; a few thousand cover the active part of a server.
const eventCacheSize = 8192

// eventCache is an LRU of parsed events by numeric ID. Stored events never
// change except by redaction, which evicts them.
type eventCache struct {
	mu    sync.Mutex
	ll    *list.List // front: most recently used
	byNID map[int64]*list.Element
	byID  map[string]int64
	max   int
}

func newEventCache(max int) *eventCache {
	return &eventCache{ll: list.New(), byNID: map[int64]*list.Element{}, byID: map[string]int64{}, max: max}
}

func (c *eventCache) get(nid int64) *Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.byNID[nid]
	if el == nil {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*Event)
}

func (c *eventCache) put(e *Event) {
	if e.NID == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.byNID[e.NID]; el != nil {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.byNID[e.NID] = c.ll.PushFront(e)
	c.byID[e.EventID()] = e.NID
	for c.ll.Len() > c.max {
		old := c.ll.Remove(c.ll.Back()).(*Event)
		delete(c.byNID, old.NID)
		delete(c.byID, old.EventID())
	}
}

// evict drops an event (by event ID) whose stored form changed.
func (c *eventCache) evict(eventID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	nid, ok := c.byID[eventID]
	if !ok {
		return
	}
	if el := c.byNID[nid]; el != nil {
		c.ll.Remove(el)
	}
	delete(c.byNID, nid)
	delete(c.byID, eventID)
}
