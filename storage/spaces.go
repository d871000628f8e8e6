package storage

import "context"

// CurrentStateOfType returns a room's current state events of one type,
// whatever their state keys (the m.space.child events of a space), in no
// particular order.
func (o ops) CurrentStateOfType(ctx context.Context, roomNID int64, typ string) ([]EventRow, error) {
	return scanEvents(o.q.query(ctx, `SELECT `+eventColumns+` FROM rooms_events WHERE event_nid IN (
		SELECT event_nid FROM rooms_current_state WHERE room_nid = $1 AND type = $2)`, roomNID, typ))
}
