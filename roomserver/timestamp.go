package roomserver

import (
	"context"
	"fmt"
	"math"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// ClosestEvent finds the event nearest a timestamp in one direction
// (spec: timestamp_to_event) among those visible keeps, which must keep
// the order it is given. Both the client and the federation endpoint use
// it, each with its own visibility rule. M_NOT_FOUND when there is none.
func (rs *Roomserver) ClosestEvent(ctx context.Context, room storage.Room, ts int64, forward bool,
	visible func([]*Event) ([]*Event, error)) (*Event, error) {
	cursor := storage.TimePoint{TS: ts, Stream: math.MinInt64}
	if !forward {
		cursor.Stream = math.MaxInt64
	}
	// Bounded: a room whose history is all hidden from the asker must not
	// cost a scan of all of it.
	const batch, maxRounds = 50, 20
	for round := 0; round < maxRounds; round++ {
		rows, err := rs.db.EventsByTimestamp(ctx, room.NID, cursor, forward, batch)
		if err != nil {
			return nil, err
		}
		evs, err := rs.EventRows(room, rows)
		if err != nil {
			return nil, err
		}
		kept, err := visible(evs)
		if err != nil {
			return nil, err
		}
		if len(kept) > 0 {
			return kept[0], nil
		}
		if len(rows) < batch {
			break
		}
		last := rows[len(rows)-1]
		cursor = storage.TimePoint{TS: last.OriginServerTS, Stream: last.StreamPos + 1}
		if !forward {
			cursor.Stream = last.StreamPos - 1
		}
	}
	dir := "backward"
	if forward {
		dir = "forward"
	}
	return nil, mxerr.NotFound(fmt.Sprintf("Unable to find event from %d in %s direction", ts, dir))
}
