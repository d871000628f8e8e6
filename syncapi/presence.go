package syncapi

import (
	"context"
	"net/http"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/presence"
)

// syncPresence applies the set_presence parameter (spec: online when
// absent, offline leaves presence alone, unavailable marks the user idle)
// and returns what to call when the sync ends: a long-poll in progress
// keeps the user from timing out to offline.
func (s *Sync) syncPresence(r *http.Request, req *request) (func(), error) {
	set := r.URL.Query().Get("set_presence")
	if set != "" && !presence.ValidState(set) {
		return nil, mxerr.InvalidParam("set_presence must be online, unavailable or offline")
	}
	if s.presence == nil {
		return func() {}, nil
	}
	return s.presence.Syncing(r.Context(), req.user.UserID.String(), set)
}

// presenceSection fills the response's presence events: the changes in
// (since, pos] of the user's own presence and of the users sharing a room
// with them, through the presence filter, leaving out ignored users.
func (s *Sync) presenceSection(ctx context.Context, req *request, pos int64, resp *Response) error {
	if s.presence == nil {
		return nil
	}
	evs, err := s.presence.Since(ctx, req.user.UserID.String(), req.since, pos)
	if err != nil {
		return err
	}
	f := req.filter.Presence
	var kept []any
	for _, e := range evs {
		if req.ignored[e.Sender] || !f.Match(e.Type, e.Sender) {
			continue
		}
		kept = append(kept, e)
	}
	if f != nil && f.Limit != nil && len(kept) > *f.Limit {
		kept = kept[len(kept)-*f.Limit:] // the newest
	}
	resp.Presence.Events = append(resp.Presence.Events, kept...)
	return nil
}
