package roomserver

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// eventsByNID loads and parses events of one room version, from the cache
// where it can.
func (rs *Roomserver) eventsByNID(ctx context.Context, nids []int64, version gomatrixserverlib.RoomVersion) ([]*Event, error) {
	out := make([]*Event, 0, len(nids))
	var missing []int64
	for _, nid := range nids {
		if e := rs.cache.get(nid); e != nil {
			out = append(out, e)
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := rs.db.EventsByNID(ctx, missing)
	if err != nil {
		return nil, err
	}
	evs, err := rs.parseRows(rows, version)
	if err != nil {
		return nil, err
	}
	return append(out, evs...), nil
}

// parseRows turns stored rows into events, reusing cached parses whose
// redaction state still matches the row.
func (rs *Roomserver) parseRows(rows []storage.EventRow, version gomatrixserverlib.RoomVersion) ([]*Event, error) {
	out := make([]*Event, 0, len(rows))
	for _, r := range rows {
		if e := rs.cache.get(r.NID); e != nil && e.RedactedBy == r.RedactedBy && e.StateAfterNID == r.StateAfterNID {
			out = append(out, e)
			continue
		}
		e, err := eventFromRow(r, version)
		if err != nil {
			return nil, err
		}
		rs.cache.put(e)
		out = append(out, e)
	}
	return out, nil
}

// Event loads one event by ID, or M_NOT_FOUND.
func (rs *Roomserver) Event(ctx context.Context, eventID string) (*Event, error) {
	row, err := rs.db.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	room, err := rs.db.RoomByNID(ctx, row.RoomNID)
	if err != nil {
		return nil, err
	}
	evs, err := rs.parseRows([]storage.EventRow{row}, gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// Events loads events of one room by numeric ID.
func (rs *Roomserver) Events(ctx context.Context, room storage.Room, nids []int64) ([]*Event, error) {
	return rs.eventsByNID(ctx, nids, gomatrixserverlib.RoomVersion(room.Version))
}

// EventRows parses stored rows of one room.
func (rs *Roomserver) EventRows(room storage.Room, rows []storage.EventRow) ([]*Event, error) {
	return rs.parseRows(rows, gomatrixserverlib.RoomVersion(room.Version))
}

// CurrentState returns a room's current state events.
func (rs *Roomserver) CurrentState(ctx context.Context, room storage.Room) ([]*Event, error) {
	nids, err := rs.db.CurrentStateNIDs(ctx, room.NID)
	if err != nil {
		return nil, err
	}
	return rs.Events(ctx, room, nids)
}

// StateEvent returns the current state event at (type, state_key), or nil.
func (rs *Roomserver) StateEvent(ctx context.Context, room storage.Room, typ, stateKey string) (*Event, error) {
	return rs.StateEventAt(ctx, room, room.StateNID, typ, stateKey)
}

// StateEventAt returns the event at (type, state_key) in a snapshot, or nil.
func (rs *Roomserver) StateEventAt(ctx context.Context, room storage.Room, snapshotNID int64, typ, stateKey string) (*Event, error) {
	nid, err := rs.db.SnapshotEntry(ctx, snapshotNID, typ, stateKey)
	if err != nil || nid == 0 {
		return nil, err
	}
	evs, err := rs.Events(ctx, room, []int64{nid})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	return evs[0], nil
}

// StateAt returns the full state of a snapshot.
func (rs *Roomserver) StateAt(ctx context.Context, room storage.Room, snapshotNID int64) ([]*Event, error) {
	entries, err := rs.db.Snapshot(ctx, snapshotNID)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(entries))
	for _, n := range entries {
		nids = append(nids, n)
	}
	return rs.Events(ctx, room, nids)
}

// Membership returns a user's current membership in a room ("" if none).
func (rs *Roomserver) Membership(ctx context.Context, room storage.Room, userID string) (string, error) {
	e, err := rs.StateEvent(ctx, room, spec.MRoomMember, userID)
	if err != nil || e == nil {
		return "", err
	}
	return membershipOf(e), nil
}

// MembershipAt returns a user's membership in a snapshot ("" if none).
func (rs *Roomserver) MembershipAt(ctx context.Context, room storage.Room, snapshotNID int64, userID string) (string, error) {
	e, err := rs.StateEventAt(ctx, room, snapshotNID, spec.MRoomMember, userID)
	if err != nil || e == nil {
		return "", err
	}
	return membershipOf(e), nil
}

// PowerLevels returns the power level content of a snapshot, with the
// spec's defaults when the room has none.
func (rs *Roomserver) PowerLevels(ctx context.Context, room storage.Room, snapshotNID int64) (*PowerLevels, error) {
	pl, err := rs.StateEventAt(ctx, room, snapshotNID, spec.MRoomPowerLevels, "")
	if err != nil {
		return nil, err
	}
	create, err := rs.StateEventAt(ctx, room, snapshotNID, spec.MRoomCreate, "")
	if err != nil {
		return nil, err
	}
	return newPowerLevels(pl, create)
}
