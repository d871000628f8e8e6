package federation

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// inboundToDeviceRetention is how long the message IDs of received
// m.direct_to_device EDUs are remembered: longer than a sender keeps
// retrying one transaction, so that an EDU re-sent after a lost answer is
// still recognized.
const inboundToDeviceRetention = 7 * 24 * time.Hour

// maxToDeviceMessageID bounds stored message IDs (the spec says 32
// codepoints; a little slack costs nothing).
const maxToDeviceMessageID = 255

var errToDeviceSeen = errors.New("m.direct_to_device message already delivered")

// toDeviceEDU delivers an m.direct_to_device EDU (spec: server-server
// "Send-to-device messaging") to the inboxes of local devices: once per
// (origin, message_id), from a sender of the origin server; "*" stands for
// every device of a user, and unknown users and devices are skipped.
func (t *transactions) toDeviceEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	sender, err := spec.NewUserID(c.Sender, true)
	if err != nil || sender.Domain() != origin {
		return errors.New("sender " + c.Sender + " is not of the origin server")
	}
	if c.Type == "" || len(c.Type) > 255 || c.MessageID == "" || len(c.MessageID) > maxToDeviceMessageID {
		return errors.New("invalid type or message_id")
	}
	msgs := storage.ToDeviceMessages{}
	var wake []string
	for userID, devices := range c.Messages {
		uid, err := spec.NewUserID(userID, true)
		if err != nil || uid.Domain() != t.rf.serverName {
			continue // not ours to deliver
		}
		objects := map[string]json.RawMessage{}
		for deviceID, m := range devices {
			if isObject(m) {
				objects[deviceID] = m
			}
		}
		if len(objects) > 0 {
			msgs[uid.Local()] = objects
			wake = append(wake, uid.String())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	now := t.rf.now()
	err = t.stream.Write(1, wake, func(pos int64) error {
		return t.db.Transact(ctx, func(tx *storage.Tx) error {
			fresh, err := tx.ClaimInboundToDevice(ctx, string(origin), c.MessageID, now.UnixMilli())
			if err != nil {
				return err
			}
			if !fresh {
				return errToDeviceSeen
			}
			if _, err := tx.PutToDevice(ctx, c.Sender, c.Type, msgs, pos); err != nil {
				return err
			}
			return tx.PruneInboundToDevice(ctx, now.Add(-inboundToDeviceRetention).UnixMilli())
		})
	})
	if errors.Is(err, errToDeviceSeen) {
		t.rf.log.WithField("origin", origin).WithField("message_id", c.MessageID).Debug("Skipping an m.direct_to_device EDU delivered before")
		return nil
	}
	return err
}
