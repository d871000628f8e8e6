package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
)

// Send-to-device messages: the inboxes of local devices, the client
// transactions of PUT /sendToDevice and the IDs of m.direct_to_device
// EDUs received (migration 0012).

// ToDeviceMessages are the messages of one send: localpart → device ID
// (or "*", every device of the user) → content.
type ToDeviceMessages map[string]map[string]json.RawMessage

// PutToDevice stores one send's messages for local devices at stream
// position pos, in order of localpart and device ID. Unknown users and
// devices are skipped (spec: they are silently dropped). A device named
// both on its own and through "*" gets only its own message. It returns
// how many messages were stored.
func (o ops) PutToDevice(ctx context.Context, sender, typ string, msgs ToDeviceMessages, pos int64) (int64, error) {
	var total int64
	localparts := make([]string, 0, len(msgs))
	for lp := range msgs {
		localparts = append(localparts, lp)
	}
	slices.Sort(localparts)
	for _, lp := range localparts {
		devices := msgs[lp]
		named := []string{} // never nil: it is sent as a JSON array
		for d := range devices {
			if d != "*" {
				named = append(named, d)
			}
		}
		slices.Sort(named)
		for _, d := range named {
			res, err := o.q.exec(ctx, `INSERT INTO todevice_inbox (localpart, device_id, stream_pos, sender, type, content)
				SELECT localpart, device_id, CAST($3 AS BIGINT), $4, $5, $6 FROM accounts_devices WHERE localpart = $1 AND device_id = $2`,
				lp, d, pos, sender, typ, string(devices[d]))
			if err != nil {
				return total, err
			}
			n, _ := res.RowsAffected()
			total += n
		}
		if all, ok := devices["*"]; ok {
			res, err := o.q.exec(ctx, `INSERT INTO todevice_inbox (localpart, device_id, stream_pos, sender, type, content)
				SELECT localpart, device_id, CAST($2 AS BIGINT), $3, $4, $5 FROM accounts_devices
				WHERE localpart = $1 AND device_id NOT IN `+o.inList("$6", "text")+` ORDER BY device_id`,
				lp, pos, sender, typ, string(all), jsonList(named))
			if err != nil {
				return total, err
			}
			n, _ := res.RowsAffected()
			total += n
		}
	}
	return total, nil
}

// ToDeviceRow is a message in a device's inbox.
type ToDeviceRow struct {
	ID        int64
	StreamPos int64
	// SentPos is the position of the first /sync response that carried
	// the message; 0 while none did.
	SentPos int64
	Sender  string
	Type    string
	Content json.RawMessage
}

// ToDeviceInbox returns up to limit messages of a device's inbox written
// at or below upTo, oldest first.
func (o ops) ToDeviceInbox(ctx context.Context, localpart, deviceID string, upTo int64, limit int) ([]ToDeviceRow, error) {
	rows, err := o.q.query(ctx, `SELECT id, stream_pos, sent_pos, sender, type, content FROM todevice_inbox
		WHERE localpart = $1 AND device_id = $2 AND stream_pos <= $3 ORDER BY stream_pos, id LIMIT $4`,
		localpart, deviceID, upTo, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ToDeviceRow
	for rows.Next() {
		var r ToDeviceRow
		var sent sql.NullInt64
		var content string
		if err := rows.Scan(&r.ID, &r.StreamPos, &sent, &r.Sender, &r.Type, &content); err != nil {
			return nil, err
		}
		r.SentPos, r.Content = sent.Int64, json.RawMessage(content)
		out = append(out, r)
	}
	return out, rows.Err()
}

// MarkToDeviceSent records that a /sync response at position pos carried
// the messages; those already carried by an earlier response keep its
// position.
func (o ops) MarkToDeviceSent(ctx context.Context, ids []int64, pos int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := o.q.exec(ctx, `UPDATE todevice_inbox SET sent_pos = $1 WHERE sent_pos IS NULL AND id IN `+o.inList("$2", "bigint"),
		pos, jsonList(ids))
	return err
}

// AckToDevice deletes the messages of a device that a /sync response at
// or below since carried: the device synced on from that response, so it
// has them (spec: "deleted once the client has acknowledged").
func (o ops) AckToDevice(ctx context.Context, localpart, deviceID string, since int64) error {
	var top sql.NullInt64
	err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM todevice_inbox WHERE localpart = $1 AND device_id = $2 AND sent_pos <= $3`,
		localpart, deviceID, since).Scan(&top)
	if err != nil || !top.Valid {
		return err
	}
	// The high-water mark first: should the delete then fail, the rows
	// are still there and still count.
	if err := o.RaiseToDevicePos(ctx, top.Int64); err != nil {
		return err
	}
	_, err = o.q.exec(ctx, `DELETE FROM todevice_inbox WHERE localpart = $1 AND device_id = $2 AND sent_pos <= $3`, localpart, deviceID, since)
	return err
}

// RaiseToDevicePos records that to-device messaging used stream position
// pos, so that MaxToDeviceStreamPos covers it without an inbox row.
func (o ops) RaiseToDevicePos(ctx context.Context, pos int64) error {
	_, err := o.q.exec(ctx, `UPDATE storage_sequences SET value = $1 WHERE name = 'todevice_pos' AND value < $1`, pos)
	return err
}

// MaxToDeviceStreamPos is the highest stream position to-device
// messaging ever used, deleted messages included: the stream must restart
// above it, or a device holding a token past a deleted message would skip
// whatever reused its position.
func (o ops) MaxToDeviceStreamPos(ctx context.Context) (int64, error) {
	var inbox sql.NullInt64
	if err := o.q.queryRow(ctx, `SELECT MAX(stream_pos) FROM todevice_inbox`).Scan(&inbox); err != nil {
		return 0, err
	}
	deleted, err := o.CurrentSequence(ctx, "todevice_pos")
	if err != nil {
		return 0, err
	}
	return max(inbox.Int64, deleted), nil
}

// ClaimToDeviceTxn starts or finds a client transaction of PUT
// /sendToDevice: for a new one it stores messageID and returns it; for a
// known one it returns the stored message ID and whether the request
// completed.
func (o ops) ClaimToDeviceTxn(ctx context.Context, localpart, deviceID, eventType, txnID, messageID string, ts int64) (string, bool, error) {
	if _, err := o.q.exec(ctx, `INSERT INTO todevice_client_txns (localpart, device_id, event_type, txn_id, message_id, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (localpart, device_id, event_type, txn_id) DO NOTHING`,
		localpart, deviceID, eventType, txnID, messageID, ts); err != nil {
		return "", false, err
	}
	var id string
	var done bool
	err := o.q.writeRow(ctx, `SELECT message_id, done FROM todevice_client_txns
		WHERE localpart = $1 AND device_id = $2 AND event_type = $3 AND txn_id = $4`,
		localpart, deviceID, eventType, txnID).Scan(&id, &done)
	if errors.Is(err, sql.ErrNoRows) {
		// Claimed and then gone: the device was deleted meanwhile.
		return "", false, ErrNotFound
	}
	return id, done, err
}

// FinishToDeviceTxn marks a client transaction complete. It reports false
// when it already was (a concurrent retry finished first); run it in the
// transaction that stores the local messages, and roll back then.
func (o ops) FinishToDeviceTxn(ctx context.Context, localpart, deviceID, eventType, txnID string) (bool, error) {
	res, err := o.q.exec(ctx, `UPDATE todevice_client_txns SET done = TRUE
		WHERE localpart = $1 AND device_id = $2 AND event_type = $3 AND txn_id = $4 AND NOT done`,
		localpart, deviceID, eventType, txnID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PruneToDeviceTxns forgets client transactions started before ts.
func (o ops) PruneToDeviceTxns(ctx context.Context, before int64) error {
	_, err := o.q.exec(ctx, `DELETE FROM todevice_client_txns WHERE created_ts < $1`, before)
	return err
}

// ClaimInboundToDevice records the message ID of an m.direct_to_device
// EDU from origin; false when it was seen before. Run it in the
// transaction that stores the messages.
func (o ops) ClaimInboundToDevice(ctx context.Context, origin, messageID string, ts int64) (bool, error) {
	res, err := o.q.exec(ctx, `INSERT INTO todevice_inbound (origin, message_id, received_ts) VALUES ($1, $2, $3)
		ON CONFLICT (origin, message_id) DO NOTHING`, origin, messageID, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PruneInboundToDevice forgets EDU message IDs received before ts.
func (o ops) PruneInboundToDevice(ctx context.Context, before int64) error {
	_, err := o.q.exec(ctx, `DELETE FROM todevice_inbound WHERE received_ts < $1`, before)
	return err
}
