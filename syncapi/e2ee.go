package syncapi

import (
	"context"

	"github.com/veche/veche/e2ee"
)

// e2eeSections fills what end-to-end encryption needs from /sync: the
// device's one-time key counts and unused fallback key types, and, for
// an incremental sync, whose device lists changed (spec: "Extensions to
// /sync" of the End-to-End Encryption module).
func (s *Sync) e2eeSections(ctx context.Context, req *request, pos int64, resp *Response) error {
	localpart, deviceID := req.user.Localpart(), req.user.DeviceID
	counts, err := e2ee.OneTimeKeyCounts(ctx, s.db, localpart, deviceID)
	if err != nil {
		return err
	}
	resp.OTKCounts = counts
	types, err := s.db.UnusedFallbackKeyTypes(ctx, localpart, deviceID)
	if err != nil {
		return err
	}
	if types != nil {
		resp.FallbackKeyTypes = types
	}
	if req.initial {
		return nil // device_lists only reports changes since a token
	}
	changed, left, err := e2ee.DeviceListChanges(ctx, s.db, req.user.UserID.String(), req.since, pos)
	if err != nil {
		return err
	}
	resp.DeviceLists = deviceLists{Changed: changed, Left: left}
	return nil
}
