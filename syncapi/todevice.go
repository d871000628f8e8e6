package syncapi

import (
	"context"
	"encoding/json"
)

// maxToDevicePerSync caps the to-device messages of one response (the
// spec recommends 100); the rest wait for the next sync.
const maxToDevicePerSync = 100

// toDeviceEvent is a message in the to_device section.
type toDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// toDevice fills the to_device section with the device's pending
// messages, oldest first, and deletes those the device acknowledged.
//
// A message is acknowledged by a sync from a token at or past the first
// response that carried it: each message records that response's position
// (sent_pos) when first carried, and a since at or past it proves the
// client had that response or a later one, which carried the message too
// (messages leave an inbox only from its front, so one carried once is
// among the first ones of every later response until it is deleted). The
// messages' own stream positions cannot serve, because of the cap: those
// left over by a full response lie below its next_batch.
//
// That makes a response carrying messages need a position above since,
// else the retry of a lost response would delete them; when the stream
// has not moved past since (the leftovers of a full response, on a quiet
// server), this takes a new position and leaves the messages to the
// response it wakes.
func (s *Sync) toDevice(ctx context.Context, req *request, pos int64, resp *Response) error {
	deviceID := req.user.DeviceID
	if deviceID == "" {
		return nil
	}
	localpart := req.user.Localpart()
	// The carried messages are at most the first maxToDevicePerSync of
	// the inbox, so twice that finds a full response's worth after them.
	rows, err := s.db.ToDeviceInbox(ctx, localpart, deviceID, pos, 2*maxToDevicePerSync)
	if err != nil {
		return err
	}
	acked := false
	var events []any
	var fresh []int64
	for _, r := range rows {
		if !req.initial && r.SentPos != 0 && r.SentPos <= req.since {
			acked = true
			continue
		}
		if len(events) == maxToDevicePerSync {
			break
		}
		events = append(events, toDeviceEvent{Sender: r.Sender, Type: r.Type, Content: r.Content})
		if r.SentPos == 0 {
			fresh = append(fresh, r.ID)
		}
	}
	if acked {
		if err := s.db.AckToDevice(ctx, localpart, deviceID, req.since); err != nil {
			return err
		}
	}
	if len(events) == 0 {
		return nil
	}
	if !req.initial && pos <= req.since {
		return s.stream.Write(1, []string{req.user.UserID.String()}, func(p int64) error {
			return s.db.RaiseToDevicePos(ctx, p)
		})
	}
	if err := s.db.MarkToDeviceSent(ctx, fresh, pos); err != nil {
		return err
	}
	resp.ToDevice.Events = events
	return nil
}
