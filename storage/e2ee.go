package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"reflect"

	"github.com/tidwall/gjson"

	"github.com/veche/veche/config"
)

// End-to-end encryption keys, cross-signing signatures and device list
// changes (migration 0014). Key JSON is stored as uploaded: the
// signatures in it cover that exact object.

// DeviceKeys is a local device with its identity keys.
type DeviceKeys struct {
	DeviceID    string
	DisplayName *string
	// KeyJSON is nil for a device that uploaded no keys.
	KeyJSON []byte
}

// PutDeviceKeys stores a device's identity keys. changed is false when
// the same JSON was stored already.
func (o ops) PutDeviceKeys(ctx context.Context, localpart, deviceID string, keyJSON []byte) (changed bool, err error) {
	var old []byte
	err = o.q.queryRow(ctx, `SELECT key_json FROM e2ee_device_keys WHERE localpart = $1 AND device_id = $2`, localpart, deviceID).Scan(&old)
	if err == nil && bytes.Equal(old, keyJSON) {
		return false, nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	_, err = o.q.exec(ctx, `INSERT INTO e2ee_device_keys (localpart, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (localpart, device_id) DO UPDATE SET key_json = excluded.key_json`, localpart, deviceID, string(keyJSON))
	return err == nil, err
}

// DeviceKeysOf returns the keys of a user's devices that have keys: the
// listed devices, or all of them when deviceIDs is empty. Ordered by
// device ID.
func (o ops) DeviceKeysOf(ctx context.Context, localpart string, deviceIDs []string) ([]DeviceKeys, error) {
	q := `SELECT d.device_id, d.display_name, k.key_json FROM e2ee_device_keys k
		JOIN accounts_devices d ON d.localpart = k.localpart AND d.device_id = k.device_id
		WHERE k.localpart = $1`
	args := []any{localpart}
	if len(deviceIDs) > 0 {
		q += ` AND k.device_id IN ` + o.inList("$2", "text")
		args = append(args, jsonList(deviceIDs))
	}
	return scanDeviceKeys(o.q.query(ctx, q+` ORDER BY d.device_id`, args...))
}

// DevicesAndKeys lists every device of a user, with its keys when it has
// uploaded some, ordered by device ID.
func (o ops) DevicesAndKeys(ctx context.Context, localpart string) ([]DeviceKeys, error) {
	return scanDeviceKeys(o.q.query(ctx, `SELECT d.device_id, d.display_name, k.key_json FROM accounts_devices d
		LEFT JOIN e2ee_device_keys k ON k.localpart = d.localpart AND k.device_id = d.device_id
		WHERE d.localpart = $1 ORDER BY d.device_id`, localpart))
}

func scanDeviceKeys(rows *sql.Rows, err error) ([]DeviceKeys, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeviceKeys
	for rows.Next() {
		var d DeviceKeys
		var name, keys sql.NullString
		if err := rows.Scan(&d.DeviceID, &name, &keys); err != nil {
			return nil, err
		}
		if name.Valid {
			d.DisplayName = &name.String
		}
		if keys.Valid {
			d.KeyJSON = []byte(keys.String)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// OneTimeKey is a one-time or fallback key: "<Algorithm>:<KeyID>" names
// it in the API.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte
}

// ErrKeyExists is returned when a one-time key ID is uploaded again with
// different content.
var ErrKeyExists = errors.New("storage: a different key with this ID exists")

// PutOneTimeKeys stores one-time keys of a device. A key uploaded again
// unchanged is ignored (a client retrying a lost response); one with the
// same ID and other content is refused with ErrKeyExists and the caller
// should roll back.
func (o ops) PutOneTimeKeys(ctx context.Context, localpart, deviceID string, keys []OneTimeKey) error {
	for _, k := range keys {
		var old []byte
		err := o.q.queryRow(ctx, `SELECT key_json FROM e2ee_one_time_keys
			WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			localpart, deviceID, k.Algorithm, k.KeyID).Scan(&old)
		switch {
		case err == nil:
			if !jsonEqual(old, k.JSON) {
				return ErrKeyExists
			}
			continue
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := o.q.exec(ctx, `INSERT INTO e2ee_one_time_keys (localpart, device_id, algorithm, key_id, key_json)
			VALUES ($1, $2, $3, $4, $5)`, localpart, deviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
			return err
		}
	}
	return nil
}

// jsonEqual compares two JSON values ignoring formatting and key order.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func (o ops) OneTimeKeyCounts(ctx context.Context, localpart, deviceID string) (map[string]int, error) {
	rows, err := o.q.query(ctx, `SELECT algorithm, COUNT(*) FROM e2ee_one_time_keys
		WHERE localpart = $1 AND device_id = $2 GROUP BY algorithm`, localpart, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// PutFallbackKey makes k the device's fallback key for its algorithm. The
// same key uploaded again keeps its used flag; a new one starts unused.
func (o ops) PutFallbackKey(ctx context.Context, localpart, deviceID string, k OneTimeKey) error {
	_, err := o.q.exec(ctx, `INSERT INTO e2ee_fallback_keys (localpart, device_id, algorithm, key_id, key_json, used)
		VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (localpart, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
		WHERE e2ee_fallback_keys.key_id <> excluded.key_id OR e2ee_fallback_keys.key_json <> excluded.key_json`,
		localpart, deviceID, k.Algorithm, k.KeyID, string(k.JSON))
	return err
}

// UnusedFallbackKeyTypes lists the algorithms for which the device has a
// fallback key nobody claimed yet.
func (o ops) UnusedFallbackKeyTypes(ctx context.Context, localpart, deviceID string) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT algorithm FROM e2ee_fallback_keys
		WHERE localpart = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, localpart, deviceID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// ClaimOneTimeKey takes one of the device's one-time keys of the
// algorithm, deleting it; when none is left it returns the fallback key
// (which stays) and marks it used. ok is false when the device has
// neither.
func (o ops) ClaimOneTimeKey(ctx context.Context, localpart, deviceID, algorithm string) (k OneTimeKey, ok bool, err error) {
	// Concurrent claims must not get the same key: PostgreSQL skips rows
	// another claim holds; SQLite has one writer.
	lock := ""
	if o.backend == config.Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	k.Algorithm = algorithm
	var js string
	err = o.q.writeRow(ctx, `DELETE FROM e2ee_one_time_keys
		WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
			SELECT key_id FROM e2ee_one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3
			ORDER BY key_id LIMIT 1`+lock+`)
		RETURNING key_id, key_json`, localpart, deviceID, algorithm).Scan(&k.KeyID, &js)
	if err == nil {
		k.JSON = []byte(js)
		return k, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return k, false, err
	}
	err = o.q.writeRow(ctx, `UPDATE e2ee_fallback_keys SET used = TRUE
		WHERE localpart = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, localpart, deviceID, algorithm).Scan(&k.KeyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	k.JSON = []byte(js)
	return k, err == nil, err
}

// Cross-signing key types (e2ee_cross_signing_keys.key_type).
const (
	CrossSigningMaster      = "master"
	CrossSigningSelfSigning = "self_signing"
	CrossSigningUserSigning = "user_signing"
)

// CrossSigningKeys returns a local user's cross-signing keys by type.
func (o ops) CrossSigningKeys(ctx context.Context, localpart string) (map[string][]byte, error) {
	rows, err := o.q.query(ctx, `SELECT key_type, key_json FROM e2ee_cross_signing_keys WHERE localpart = $1`, localpart)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var typ, js string
		if err := rows.Scan(&typ, &js); err != nil {
			return nil, err
		}
		out[typ] = []byte(js)
	}
	return out, rows.Err()
}

// PutCrossSigningKey stores (or replaces) one of a local user's
// cross-signing keys.
func (o ops) PutCrossSigningKey(ctx context.Context, localpart, keyType string, keyJSON []byte) error {
	_, err := o.q.exec(ctx, `INSERT INTO e2ee_cross_signing_keys (localpart, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (localpart, key_type) DO UPDATE SET key_json = excluded.key_json`, localpart, keyType, string(keyJSON))
	return err
}

// KeySignature is one signature on a device's keys or a cross-signing
// key, uploaded separately from the key.
type KeySignature struct {
	TargetUserID string
	// TargetKeyID is a device ID or a cross-signing key's public key.
	TargetKeyID  string
	SignerUserID string
	SignerKeyID  string // "ed25519:<key>"
	Signature    string
}

// PutKeySignature stores a signature, replacing one by the same key.
func (o ops) PutKeySignature(ctx context.Context, s KeySignature) error {
	_, err := o.q.exec(ctx, `INSERT INTO e2ee_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
		s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	return err
}

// KeySignatures returns the signatures on a user's keys that viewer may
// see: the user's own, and viewer's (viewer "" sees only the user's own,
// as other servers do).
func (o ops) KeySignatures(ctx context.Context, targetUserID string, targetKeyIDs []string, viewer string) ([]KeySignature, error) {
	if len(targetKeyIDs) == 0 {
		return nil, nil
	}
	rows, err := o.q.query(ctx, `SELECT target_key_id, signer_user_id, signer_key_id, signature FROM e2ee_signatures
		WHERE target_user_id = $1 AND (signer_user_id = $1 OR signer_user_id = $2)
		AND target_key_id IN `+o.inList("$3", "text"), targetUserID, viewer, jsonList(targetKeyIDs))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []KeySignature
	for rows.Next() {
		s := KeySignature{TargetUserID: targetUserID}
		if err := rows.Scan(&s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteKeySignatures drops the signatures on the given keys of a user
// (a device that is gone, or whose keys were replaced).
func (o ops) DeleteKeySignatures(ctx context.Context, targetUserID string, targetKeyIDs []string) error {
	if len(targetKeyIDs) == 0 {
		return nil
	}
	_, err := o.q.exec(ctx, `DELETE FROM e2ee_signatures WHERE target_user_id = $1 AND target_key_id IN `+o.inList("$2", "text"),
		targetUserID, jsonList(targetKeyIDs))
	return err
}

// SetDeviceListPos records that a user's devices or keys changed at a
// stream position, returning the position of the change before (0 when
// there was none).
func (o ops) SetDeviceListPos(ctx context.Context, userID string, pos int64) (prev int64, err error) {
	prev, err = o.DeviceListPos(ctx, userID)
	if err != nil {
		return 0, err
	}
	_, err = o.q.exec(ctx, `INSERT INTO e2ee_device_list_changes (user_id, stream_pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos`, userID, pos)
	return prev, err
}

// DeviceListPos is the position of a user's latest device list change, 0
// when there was none.
func (o ops) DeviceListPos(ctx context.Context, userID string) (int64, error) {
	var pos int64
	err := o.q.queryRow(ctx, `SELECT stream_pos FROM e2ee_device_list_changes WHERE user_id = $1`, userID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return pos, err
}

// maxDeviceListPos is the highest stream position of a device list
// change (MaxStreamPos).
func (o ops) maxDeviceListPos(ctx context.Context) (int64, error) {
	var pos sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM e2ee_device_list_changes`).Scan(&pos)
	return pos.Int64, err
}

// DeviceListChangedUsers lists the users whose devices or keys changed in
// (after, upTo] and who are userID or share a joined room with them.
func (o ops) DeviceListChangedUsers(ctx context.Context, userID string, after, upTo int64) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT d.user_id FROM e2ee_device_list_changes d
		WHERE d.stream_pos > $1 AND d.stream_pos <= $2 AND (d.user_id = $3 OR EXISTS (
			SELECT 1 FROM rooms_current_state mine JOIN rooms_current_state theirs ON theirs.room_nid = mine.room_nid
			WHERE mine.type = 'm.room.member' AND mine.state_key = $3 AND mine.membership = 'join'
			AND theirs.type = 'm.room.member' AND theirs.state_key = d.user_id AND theirs.membership = 'join'))
		ORDER BY d.user_id`, after, upTo, userID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// UsersSharingRooms lists the users joined to any room userID is joined
// to (userID among them when it is in a room), each once.
func (o ops) UsersSharingRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := o.q.query(ctx, `SELECT DISTINCT theirs.state_key FROM rooms_current_state mine
		JOIN rooms_current_state theirs ON theirs.room_nid = mine.room_nid
		WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
		AND theirs.type = 'm.room.member' AND theirs.membership = 'join'
		ORDER BY theirs.state_key`, userID)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// MemberChange is an accepted membership event in the stream.
type MemberChange struct {
	RoomNID    int64
	UserID     string
	Membership string
	// PrevMembership is the membership it replaced ("" when none).
	PrevMembership string
}

// MemberChanges lists the accepted membership events of the given rooms
// with stream positions in (after, upTo], oldest first.
func (o ops) MemberChanges(ctx context.Context, roomNIDs []int64, after, upTo int64) ([]MemberChange, error) {
	if len(roomNIDs) == 0 || after >= upTo {
		return nil, nil
	}
	rows, err := o.q.query(ctx, `SELECT e.room_nid, e.state_key, e.json, p.json FROM rooms_events e
		LEFT JOIN rooms_events p ON p.event_nid = e.replaces_nid
		WHERE e.type = 'm.room.member' AND e.status = 0 AND e.stream_pos > $1 AND e.stream_pos <= $2
		AND e.room_nid IN `+o.inList("$3", "bigint")+` ORDER BY e.stream_pos`, after, upTo, jsonList(roomNIDs))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MemberChange
	for rows.Next() {
		var c MemberChange
		var js string
		var prev sql.NullString
		if err := rows.Scan(&c.RoomNID, &c.UserID, &js, &prev); err != nil {
			return nil, err
		}
		c.Membership = gjson.Get(js, "content.membership").Str
		if prev.Valid {
			c.PrevMembership = gjson.Get(prev.String, "content.membership").Str
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
