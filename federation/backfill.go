package federation

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
)

// Backfill, the client side: when a local user pages back past the start
// of the history this server holds, fetch earlier history from servers in
// the room (spec: "Backfilling and retrieving missing events"). The
// roomserver stores it as history (roomserver.InputBackfill): visible to
// /messages in its place, never in sync, no change to the current state.

const (
	// maxBackfillServers bounds how many servers one backfill tries.
	maxBackfillServers = 5
	// maxBackfillRounds bounds the rounds of fetching what a batch lacks
	// (auth events, the state before its oldest events).
	maxBackfillRounds = 8
)

// Backfill fetches up to limit events of history before the given events
// (prev events that this server lacks) from the servers in the room and
// stores them. It returns nil once some server's history was stored (or
// the gap was already filled); the caller bounds the time with ctx.
func (f *Federation) Backfill(ctx context.Context, room storage.Room, from []string, limit int) error {
	if len(from) == 0 {
		return nil
	}
	limit = min(max(limit, 1), maxBackfill)
	// One backfill per room at a time: a second caller finds the gap
	// filled by the first. (A lock of its own, not the catch-up one.)
	lock := f.rooms.roomLock("backfill\x00" + room.RoomID)
	lock.Lock()
	defer lock.Unlock()
	if filled, err := f.inDAG(ctx, room, from); err != nil || filled {
		return err
	}
	servers, err := f.backfillServers(ctx, room)
	if err != nil {
		return err
	}
	if len(servers) == 0 {
		return errors.New("no other server is in the room")
	}
	log := f.log.WithField("room_id", room.RoomID)
	var errs []error
	for _, s := range servers {
		n, err := f.backfillFrom(ctx, s, room, from, limit)
		if err == nil && n > 0 {
			log.WithField("server", s).WithField("events", n).Debug("Backfilled history")
			return nil
		}
		if err == nil {
			err = errors.New("no new events")
		}
		log.WithField("server", s).WithError(err).Info("Backfill from a server failed")
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("backfill: %w", errors.Join(errs...))
}

// inDAG reports whether all the events have their place in the DAG here.
func (f *Federation) inDAG(ctx context.Context, room storage.Room, ids []string) (bool, error) {
	rows, err := f.db.EventsByID(ctx, ids)
	if err != nil {
		return false, err
	}
	n := 0
	for _, r := range rows {
		if r.RoomNID == room.NID && r.Status != storage.EventOutlier {
			n++
		}
	}
	return n == len(ids), nil
}

// backfillServers lists the servers to ask, most likely to hold old
// history first: the room creator's, then the others with joined users.
func (f *Federation) backfillServers(ctx context.Context, room storage.Room) ([]spec.ServerName, error) {
	joined, err := f.db.JoinedServers(ctx, room.NID)
	if err != nil {
		return nil, err
	}
	var first spec.ServerName
	if create, err := f.rs.StateEvent(ctx, room, spec.MRoomCreate, ""); err == nil && create != nil {
		if uid, err := spec.NewUserID(string(create.SenderID()), true); err == nil {
			first = uid.Domain()
		}
	}
	var out []spec.ServerName
	if first != "" && slices.Contains(joined, string(first)) {
		out = append(out, first)
	}
	for _, s := range joined {
		if name := spec.ServerName(s); name != first {
			out = append(out, name)
		}
	}
	out = slices.DeleteFunc(out, func(s spec.ServerName) bool { return s == f.serverName || f.Denied(s) })
	return out[:min(len(out), maxBackfillServers)], nil
}

// backfillFrom asks one server and stores what it answers, returning how
// many events were new here.
func (f *Federation) backfillFrom(ctx context.Context, server spec.ServerName, room storage.Room, from []string, limit int) (int, error) {
	txn, err := f.client.Backfill(ctx, f.serverName, server, room.RoomID, limit, from)
	if err != nil {
		return 0, err
	}
	if len(txn.PDUs) > limit {
		txn.PDUs = txn.PDUs[:limit] // a server must not flood us
	}
	pdus := f.rooms.parseVerified(ctx, txn.PDUs, room, server)
	if len(pdus) == 0 {
		return 0, nil
	}
	states := map[string][]string{}
	for round := 0; ; round++ {
		results, err := f.rs.InputBackfill(ctx, room.RoomID, pdus, states)
		var missing *roomserver.MissingEventsError
		var need *roomserver.NeedStateError
		switch {
		case err == nil:
			n := 0
			for _, r := range results {
				if r.Status != roomserver.InputDuplicate {
					n++
				}
			}
			return n, nil
		case round >= maxBackfillRounds:
			return 0, err
		case errors.As(err, &missing) && len(missing.Auth) > 0:
			fetched := f.rooms.fetchEvents(ctx, server, room, missing.Auth)
			if len(fetched) == 0 {
				return 0, err
			}
			if err := f.rooms.storeOutliers(ctx, server, room, fetched); err != nil {
				return 0, err
			}
		case errors.As(err, &need):
			drop := map[string]bool{}
			for _, id := range need.EventIDs {
				ids, err := f.remoteStateBefore(ctx, server, room, id)
				if err != nil {
					// Its dependents then need a state of their own.
					f.log.WithField("event_id", id).WithField("server", server).WithError(err).Info("Dropping a backfilled event whose state is unavailable")
					drop[id] = true
					continue
				}
				states[id] = ids
			}
			pdus = slices.DeleteFunc(pdus, func(p gomatrixserverlib.PDU) bool { return drop[p.EventID()] })
			if len(pdus) == 0 {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

// remoteStateBefore asks a server for the state before an event
// (state_ids), stores the state and auth events this server lacks as
// outliers, and returns the state's event IDs.
func (f *Federation) remoteStateBefore(ctx context.Context, server spec.ServerName, room storage.Room, eventID string) ([]string, error) {
	rf := f.rooms
	ids, err := rf.client.LookupStateIDs(ctx, f.serverName, server, room.RoomID, eventID)
	if err != nil {
		return nil, fmt.Errorf("state_ids: %w", err)
	}
	all := append(append([]string{}, ids.StateEventIDs...), ids.AuthEventIDs...)
	known, err := f.rs.Known(ctx, room, all)
	if err != nil {
		return nil, err
	}
	var unknown []string
	seen := map[string]bool{}
	for _, id := range all {
		if !known[id] && !seen[id] {
			seen[id] = true
			unknown = append(unknown, id)
		}
	}
	var fetched []gomatrixserverlib.PDU
	if len(unknown) > stateFetchThreshold {
		st, err := rf.client.LookupState(ctx, f.serverName, server, room.RoomID, eventID, gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		for _, p := range rf.parseVerified(ctx, append(raws(st.StateEvents), raws(st.AuthEvents)...), room, server) {
			if seen[p.EventID()] {
				fetched = append(fetched, p)
			}
		}
	} else {
		fetched = rf.fetchEvents(ctx, server, room, unknown)
	}
	if err := rf.storeOutliers(ctx, server, room, fetched); err != nil {
		return nil, err
	}
	if ids.StateEventIDs == nil {
		ids.StateEventIDs = []string{}
	}
	return ids.StateEventIDs, nil
}
