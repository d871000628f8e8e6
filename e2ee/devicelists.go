package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

var errFederationOff = errors.New("federation is disabled on this server")

// failure is an entry of a query's or claim's failures map.
func failure(err error) map[string]any {
	var me *mxerr.Error
	if errors.As(err, &me) {
		return map[string]any{"status": me.Status, "errcode": me.ErrCode, "message": me.Message}
	}
	return map[string]any{"status": 503, "message": err.Error()}
}

// DevicesChanged records that devices of a local user were added,
// renamed, re-keyed or (deleted) removed: the users sharing a room with
// them see the user in device_lists.changed, and the servers sharing a
// room get an m.device_list_update per device. It is the accounts
// service's device hook, so it only logs failures: the device change
// itself is already committed.
func (s *Service) DevicesChanged(ctx context.Context, localpart string, deviceIDs []string, deleted bool) {
	if len(deviceIDs) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.devicesChanged(ctx, localpart, deviceIDs, deleted); err != nil {
		s.log.WithError(err).WithField("user_id", s.userID(localpart)).Warn("Recording a device list change failed")
	}
}

func (s *Service) devicesChanged(ctx context.Context, localpart string, deviceIDs []string, deleted bool) error {
	userID := s.userID(localpart)
	if deleted {
		if err := s.db.DeleteKeySignatures(ctx, userID, deviceIDs); err != nil {
			return err
		}
	}
	lock := s.userLock(userID)
	lock.Lock()
	defer lock.Unlock()
	first, prev, sharing, err := s.recordChange(ctx, userID, len(deviceIDs))
	if err != nil {
		return err
	}
	dests := remoteServers(sharing, s.serverName)
	if len(dests) == 0 || s.edus == nil {
		return nil
	}
	devices := map[string]storage.DeviceKeys{}
	if !deleted {
		all, err := s.db.DevicesAndKeys(ctx, localpart)
		if err != nil {
			return err
		}
		sigs, err := s.db.KeySignatures(ctx, userID, deviceIDs, "")
		if err != nil {
			return err
		}
		for _, d := range all {
			var mine []storage.KeySignature
			for _, sig := range sigs {
				if sig.TargetKeyID == d.DeviceID {
					mine = append(mine, sig)
				}
			}
			if d.KeyJSON != nil {
				d.KeyJSON = withSignatures(d.KeyJSON, mine)
			}
			devices[d.DeviceID] = d
		}
	}
	for i, id := range deviceIDs {
		streamID := first + int64(i)
		prevIDs := []int64{}
		if i > 0 {
			prevIDs = append(prevIDs, streamID-1)
		} else if prev > 0 {
			prevIDs = append(prevIDs, prev)
		}
		content := map[string]any{"user_id": userID, "device_id": id, "stream_id": streamID, "prev_id": prevIDs, "deleted": deleted}
		// device_display_name is left out: device names stay on this
		// server (see queryLocal).
		if d, ok := devices[id]; ok {
			if d.KeyJSON != nil {
				content["keys"] = json.RawMessage(d.KeyJSON)
			}
		} else if !deleted {
			// Gone meanwhile: a deletion will follow with its own EDU.
			content["deleted"] = true
		}
		raw, _ := json.Marshal(content)
		if err := s.edus.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: EDUDeviceListUpdate, Content: raw}, true); err != nil {
			return err
		}
	}
	return nil
}

// recordChange gives a user's device list n new stream positions (the
// last one stored as the user's latest change) and wakes the local users
// sharing a room with them. It returns the first position, the position
// of the change before, and the users sharing a room.
func (s *Service) recordChange(ctx context.Context, userID string, n int) (first, prev int64, sharing []string, err error) {
	sharing, err = s.db.UsersSharingRooms(ctx, userID)
	if err != nil {
		return 0, 0, nil, err
	}
	wake := []string{}
	for _, u := range sharing {
		if s.isLocal(u) {
			wake = append(wake, u)
		}
	}
	if s.isLocal(userID) && !containsString(wake, userID) {
		wake = append(wake, userID)
	}
	err = s.stream.Write(n, wake, func(f int64) error {
		first = f
		var err error
		prev, err = s.db.SetDeviceListPos(ctx, userID, f+int64(n)-1)
		return err
	})
	return first, prev, sharing, err
}

// remoteServers are the servers of the users, other than this one, each
// once and in order.
func remoteServers(users []string, self spec.ServerName) []spec.ServerName {
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for _, u := range users {
		if server := serverOf(u); server != "" && server != self && !seen[server] {
			seen[server] = true
			out = append(out, server)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// signingKeysChanged records a change of a local user's cross-signing
// keys and sends the public ones (master, self-signing) to the servers
// sharing a room with the user.
func (s *Service) signingKeysChanged(ctx context.Context, localpart string) error {
	userID := s.userID(localpart)
	lock := s.userLock(userID)
	lock.Lock()
	defer lock.Unlock()
	_, _, sharing, err := s.recordChange(ctx, userID, 1)
	if err != nil {
		return err
	}
	dests := remoteServers(sharing, s.serverName)
	if len(dests) == 0 || s.edus == nil {
		return nil
	}
	cross, err := s.crossSigningKeys(ctx, localpart, "")
	if err != nil {
		return err
	}
	content := map[string]any{"user_id": userID}
	if k := cross[storage.CrossSigningMaster]; k != nil {
		content["master_key"] = k
	}
	if k := cross[storage.CrossSigningSelfSigning]; k != nil {
		content["self_signing_key"] = k
	}
	raw, _ := json.Marshal(content)
	return s.edus.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: EDUSigningKeyUpdate, Content: raw}, true)
}

// RemoteDeviceListUpdate handles an inbound m.device_list_update: the
// remote user's device list changed, so local users sharing a room with
// them are told (device_lists.changed) and their clients query the keys
// again, which goes to the user's server (nothing is cached here).
func (s *Service) RemoteDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return s.remoteChange(ctx, origin, content)
}

// RemoteSigningKeyUpdate handles an inbound m.signing_key_update the same
// way.
func (s *Service) RemoteSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	return s.remoteChange(ctx, origin, content)
}

func (s *Service) remoteChange(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	if serverOf(c.UserID) != origin {
		return errors.New("user " + c.UserID + " is not of the origin server")
	}
	sharing, err := s.db.UsersSharingRooms(ctx, c.UserID)
	if err != nil {
		return err
	}
	shared := false
	for _, u := range sharing {
		shared = shared || s.isLocal(u)
	}
	if !shared {
		return nil // nobody here can care (spec: servers may ignore such updates)
	}
	lock := s.userLock(c.UserID)
	lock.Lock()
	defer lock.Unlock()
	_, _, _, err = s.recordChange(ctx, c.UserID, 1)
	return err
}

// Changes is GET /keys/changes: the users whose device lists changed
// between two stream positions, and those who stopped sharing a room.
func (s *Service) Changes(ctx context.Context, userID string, from, to int64) (changed, left []string, err error) {
	return DeviceListChanges(ctx, s.db, userID, from, to)
}

// DeviceListChanges computes device_lists for userID over (after, upTo]:
// changed lists the users sharing a room with userID (and userID) whose
// devices or keys changed, and those who started sharing a room with
// them; left lists those who no longer share any room with them.
func DeviceListChanges(ctx context.Context, db *storage.DB, userID string, after, upTo int64) (changed, left []string, err error) {
	changed, left = []string{}, []string{}
	if after >= upTo {
		return changed, left, nil
	}
	changedSet := map[string]bool{}
	leftSet := map[string]bool{}
	users, err := db.DeviceListChangedUsers(ctx, userID, after, upTo)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range users {
		changedSet[u] = true
	}

	// Membership: rooms the user is in, and those they left in the window.
	joined, err := db.RoomsOfUser(ctx, userID, spec.Join)
	if err != nil {
		return nil, nil, err
	}
	nids := make([]int64, 0, len(joined))
	for _, r := range joined {
		nids = append(nids, r.RoomNID)
	}
	own, err := db.MembershipEventsSince(ctx, userID, after, upTo)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range own {
		if !containsInt(nids, e.RoomNID) {
			nids = append(nids, e.RoomNID)
		}
	}
	if len(nids) == 0 {
		return sorted(changedSet), sorted(leftSet), nil
	}
	changes, err := db.MemberChanges(ctx, nids, after, upTo)
	if err != nil {
		return nil, nil, err
	}
	// Only joins and leaves matter, not a member's new display name.
	var candidates []string
	var ownRooms []int64
	for _, c := range changes {
		if (c.Membership == spec.Join) == (c.PrevMembership == spec.Join) {
			continue
		}
		if c.UserID == userID {
			// The user's own joins and leaves change whom they share
			// rooms with: everyone in those rooms is a candidate.
			ownRooms = append(ownRooms, c.RoomNID)
		} else {
			candidates = append(candidates, c.UserID)
		}
	}
	if len(ownRooms) > 0 {
		members, err := db.JoinedUsersOfRooms(ctx, ownRooms)
		if err != nil {
			return nil, nil, err
		}
		candidates = append(candidates, members...)
	}
	if len(candidates) == 0 {
		return sorted(changedSet), sorted(leftSet), nil
	}
	var joinedNIDs []int64
	for _, r := range joined {
		joinedNIDs = append(joinedNIDs, r.RoomNID)
	}
	sharing, err := db.JoinedUsersOfRooms(ctx, joinedNIDs)
	if err != nil {
		return nil, nil, err
	}
	shares := map[string]bool{}
	for _, u := range sharing {
		shares[u] = true
	}
	for _, u := range candidates {
		if u == userID {
			continue
		}
		if shares[u] {
			changedSet[u] = true
		} else {
			leftSet[u] = true
		}
	}
	for u := range leftSet {
		delete(changedSet, u)
	}
	return sorted(changedSet), sorted(leftSet), nil
}

func containsInt(list []int64, v int64) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}
