// Package roomserver is the room state machine. Every event, built here
// for local users or (later) received over federation, enters through one
// input path that checks it against the spec's rules, persists it with its
// state, gives it a stream position and wakes the readers concerned.
//
// Input for one room is serialized by that room's actor goroutine; rooms
// proceed in parallel. An actor takes all requests waiting for its room
// and commits them in one database transaction (group commit).
package roomserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/signingkey"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/storage"
)

// DefaultRoomVersion is the version of rooms created without one (spec:
// servers should default to the latest stable version).
const DefaultRoomVersion = gomatrixserverlib.RoomVersionV12

// Roomserver owns rooms, events and state.
type Roomserver struct {
	db         *storage.DB
	serverName spec.ServerName
	key        signingkey.Key
	stream     *stream.Stream
	log        logrus.FieldLogger
	now        func() time.Time
	cache      *eventCache

	// backfillLow is the lowest stream position handed out to backfilled
	// history (see reserveBackfill); loaded from the database once.
	backfillMu     sync.Mutex
	backfillLow    int64
	backfillLoaded bool

	mu      sync.Mutex
	actors  map[string]*actor // by room ID
	stopped bool
	wg      sync.WaitGroup
	quit    chan struct{}
}

// Deps are what the roomserver needs.
type Deps struct {
	DB         *storage.DB
	ServerName spec.ServerName
	Key        signingkey.Key
	Stream     *stream.Stream
	Log        logrus.FieldLogger
	Now        func() time.Time
}

// New returns a roomserver. Stop it to end its actors.
func New(d Deps) *Roomserver {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Roomserver{
		db: d.DB, serverName: d.ServerName, key: d.Key, stream: d.Stream, log: d.Log, now: d.Now,
		actors: map[string]*actor{}, quit: make(chan struct{}), cache: newEventCache(eventCacheSize),
	}
}

// Stop ends every actor after its current batch.
func (rs *Roomserver) Stop() {
	rs.mu.Lock()
	if rs.stopped {
		rs.mu.Unlock()
		return
	}
	rs.stopped = true
	close(rs.quit)
	rs.mu.Unlock()
	rs.wg.Wait()
}

// ServerName is this server's name.
func (rs *Roomserver) ServerName() spec.ServerName { return rs.serverName }

// errStopped is returned for requests made during shutdown.
var errStopped = mxerr.Unavailable("The server is shutting down")

// enqueue hands a request to the room's actor, starting one if needed.
func (rs *Roomserver) enqueue(ctx context.Context, roomID string, req *request) error {
	rs.mu.Lock()
	if rs.stopped {
		rs.mu.Unlock()
		return errStopped
	}
	a := rs.actors[roomID]
	if a == nil {
		a = &actor{rs: rs, roomID: roomID, queue: make(chan *request, maxBatch)}
		rs.actors[roomID] = a
		rs.wg.Add(1)
		go a.run()
	}
	// pending keeps the actor from retiring between here and the send.
	a.pending++
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		a.pending--
		rs.mu.Unlock()
	}()
	select {
	case a.queue <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-rs.quit:
		return errStopped
	}
}

// retire removes an idle actor unless a request is on its way to it.
func (rs *Roomserver) retire(a *actor) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if a.pending > 0 || len(a.queue) > 0 {
		return false
	}
	delete(rs.actors, a.roomID)
	return true
}

// submit hands a request to the room's actor and waits for its result.
func (rs *Roomserver) submit(ctx context.Context, roomID string, req *request) ([]*Event, error) {
	req.ctx = ctx
	req.done = make(chan response, 1)
	if err := rs.enqueue(ctx, roomID, req); err != nil {
		return nil, err
	}
	select {
	case resp := <-req.done:
		return resp.events, resp.err
	case <-ctx.Done():
		// The request may still commit; the caller just stops waiting.
		return nil, ctx.Err()
	case <-rs.quit:
		return nil, errStopped
	}
}

// Room returns a stored room, or M_NOT_FOUND.
func (rs *Roomserver) Room(ctx context.Context, roomID string) (storage.Room, error) {
	r, err := rs.db.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return r, mxerr.NotFound("Unknown room " + roomID)
	}
	return r, err
}

// roomVersionImpl returns the implementation of a stored room version.
func roomVersionImpl(v string) (gomatrixserverlib.IRoomVersion, error) {
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
	if err != nil {
		return nil, fmt.Errorf("room version %q: %w", v, err)
	}
	return impl, nil
}
