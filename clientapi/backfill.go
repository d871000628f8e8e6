package clientapi

import (
	"context"
	"time"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/storage"
)

// Backfill on /messages: paging backwards past the history this server
// holds — events whose prev events it lacks, such as the first event it
// received after joining — asks servers in the room for the history
// before (Federation.Backfill), then reads the page again.

const (
	// backfillBudget bounds the time one /messages request spends waiting
	// for other servers.
	backfillBudget = 10 * time.Second
	// maxBackfillsPerRequest bounds the backfills of one request; paging
	// on continues where it stopped.
	maxBackfillsPerRequest = 3
	// backfillBatch is the fewest events one backfill asks for.
	backfillBatch = 50
)

// pageBackfill tracks the backfills of one /messages request.
type pageBackfill struct {
	deadline time.Time
	tries    int
	failed   bool
	// pending: history continues on other servers beyond what this
	// request fetched, so the page gets an end token even when the local
	// history ran out.
	pending bool
}

// fillGaps backfills the history missing before a page's events (and,
// when the local history ran out, before the event at the cursor, the
// oldest one already handed out). It reports whether history was added,
// in which case the caller reads the page again.
func (a *API) fillGaps(ctx context.Context, room storage.Room, bf *pageBackfill, rows []storage.EventRow, cursor storage.TopoPoint, exhausted bool, limit int) (bool, error) {
	if bf.failed {
		return false, nil
	}
	nids := make([]int64, 0, len(rows)+1)
	for _, r := range rows {
		nids = append(nids, r.NID)
	}
	if exhausted && len(rows) == 0 && cursor != roomEnd {
		at, err := a.db.RoomEventsTopological(ctx, room.NID, cursor, false, 1)
		if err != nil {
			return false, err
		}
		for _, r := range at {
			nids = append(nids, r.NID)
		}
	}
	gaps, err := a.db.MissingPrevEvents(ctx, nids)
	if err != nil {
		return false, err
	}
	bf.pending = len(gaps) > 0
	if len(gaps) == 0 {
		return false, nil
	}
	if bf.tries >= maxBackfillsPerRequest || !a.now().Before(bf.deadline) {
		bf.pending = true
		return false, nil
	}
	bf.tries++
	bctx, cancel := context.WithDeadline(ctx, bf.deadline)
	defer cancel()
	if err := a.fed.Backfill(bctx, room, gaps, max(limit, backfillBatch)); err != nil {
		// The page ends where the local history does, with an end token
		// all the same: the history goes on, and a later request tries
		// again (without one, clients would take this for the room's
		// beginning and never ask again).
		httpapi.Logger(ctx).WithField("room_id", room.RoomID).WithError(err).Info("Backfill failed")
		bf.failed, bf.pending = true, true
		return false, nil
	}
	return true, nil
}
