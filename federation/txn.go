package federation

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/presence"
	"github.com/veche/veche/roomserver"
	"github.com/veche/veche/storage"
	"github.com/veche/veche/typing"
)

// Spec limits on one transaction.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// roomParallel bounds how many rooms of one transaction are processed
	// at once.
	roomParallel = 8
	// txnProcessTimeout bounds the processing of one transaction; the
	// sender retries with the same ID, and finished rooms stay finished.
	txnProcessTimeout = 5 * time.Minute
	// inboundTxnRetention is how long answers to transactions are kept
	// for retries.
	inboundTxnRetention = 24 * time.Hour
)

// txnBody is PUT /_matrix/federation/v1/send/{txnId}.
type txnBody struct {
	Origin         spec.ServerName   `json:"origin"`
	OriginServerTS spec.Timestamp    `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	} `json:"edus"`
}

// transactions processes inbound /send transactions: idempotently per
// (origin, transaction ID), rooms in parallel, each room in order.
type transactions struct {
	rf     *roomFed
	db     *storage.DB
	typing *typing.Tracker
	stream *stream.Stream
	keys   keyUpdates
	// acl refuses PDUs and EDUs of rooms whose server ACL bans the origin.
	acl func(ctx context.Context, roomID string, origin spec.ServerName) error
	// presence takes m.presence EDUs; may be nil.
	presence *presence.Presence

	mu       sync.Mutex
	inFlight map[[2]string]*inFlightTxn
}

type inFlightTxn struct {
	done chan struct{}
	resp *fclient.RespSend
	err  error
}

// handle answers one transaction; a retry of a transaction still being
// processed waits for the first one's answer.
func (t *transactions) handle(ctx context.Context, origin spec.ServerName, txnID string, body []byte) (*fclient.RespSend, error) {
	var txn txnBody
	if err := json.Unmarshal(body, &txn); err != nil {
		return nil, mxerr.BadJSON("Invalid transaction: " + err.Error())
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		// Synapse answers 400 too; the spec names no status for this.
		return nil, mxerr.BadJSON("A transaction carries at most 50 PDUs and 100 EDUs")
	}
	if txn.Origin != "" && txn.Origin != origin {
		return nil, mxerr.Forbidden("The transaction's origin is not the requesting server")
	}
	if stored, err := t.db.InboundTxn(ctx, string(origin), txnID); err == nil {
		var resp fclient.RespSend
		if json.Unmarshal(stored, &resp) == nil {
			return &resp, nil
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	key := [2]string{string(origin), txnID}
	t.mu.Lock()
	if t.inFlight == nil {
		t.inFlight = map[[2]string]*inFlightTxn{}
	}
	if f := t.inFlight[key]; f != nil {
		t.mu.Unlock()
		select {
		case <-f.done:
			return f.resp, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &inFlightTxn{done: make(chan struct{})}
	t.inFlight[key] = f
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.inFlight, key)
		t.mu.Unlock()
		close(f.done)
	}()

	// The work goes on if the sender hangs up: it will retry and must
	// then find the result, not half of it.
	work, cancel := context.WithTimeout(context.WithoutCancel(ctx), txnProcessTimeout)
	defer cancel()
	resp := &fclient.RespSend{PDUs: t.processPDUs(work, origin, txn.PDUs)}
	for _, edu := range txn.EDUs {
		t.processEDU(work, origin, edu.Type, edu.Content)
	}
	raw, err := json.Marshal(resp)
	if err == nil {
		now := t.rf.now()
		err = t.db.PutInboundTxn(work, string(origin), txnID, raw, now.UnixMilli())
		if err == nil {
			_ = t.db.PruneInboundTxns(work, now.Add(-inboundTxnRetention).UnixMilli())
		}
	}
	f.resp, f.err = resp, err
	return resp, err
}

// processPDUs groups PDUs by room and inputs them: rooms in parallel,
// each room's PDUs in the order sent.
func (t *transactions) processPDUs(ctx context.Context, origin spec.ServerName, raws []json.RawMessage) map[string]fclient.PDUResult {
	results := map[string]fclient.PDUResult{}
	var mu sync.Mutex
	set := func(id, errText string) {
		mu.Lock()
		results[id] = fclient.PDUResult{Error: errText}
		mu.Unlock()
	}
	type roomBatch struct {
		room storage.Room
		pdus []gomatrixserverlib.PDU
	}
	byRoom := map[string]*roomBatch{}
	var order []string
	for _, raw := range raws {
		roomID := gjson.GetBytes(raw, "room_id").Str
		room, err := t.rf.rs.Room(ctx, roomID)
		if err != nil {
			// Without the room's version the event ID cannot even be
			// computed; the spec lets us drop such PDUs.
			t.rf.log.WithField("origin", origin).WithField("room_id", roomID).Debug("Dropping a PDU for a room this server does not know")
			continue
		}
		pdu, err := parsePDU(raw, gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			t.rf.log.WithField("origin", origin).WithError(err).Info("Dropping a malformed PDU")
			continue
		}
		b := byRoom[roomID]
		if b == nil {
			b = &roomBatch{room: room}
			byRoom[roomID] = b
			order = append(order, roomID)
		}
		b.pdus = append(b.pdus, pdu)
	}
	sem := make(chan struct{}, roomParallel)
	var wg sync.WaitGroup
	for _, roomID := range order {
		b := byRoom[roomID]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if t.acl != nil {
				if err := t.acl(ctx, b.room.RoomID, origin); err != nil {
					for _, p := range b.pdus {
						set(p.EventID(), "Server is banned from the room by its ACL")
					}
					return
				}
			}
			errs := t.rf.verify(ctx, b.pdus)
			for i, p := range b.pdus {
				if errs[i] != nil {
					set(p.EventID(), "Invalid signature: "+errs[i].Error())
					continue
				}
				res, err := t.rf.input(ctx, origin, b.room, p)
				switch {
				case err != nil:
					set(p.EventID(), err.Error())
				case res.Status == roomserver.InputRejected:
					set(p.EventID(), "Rejected: "+res.Reason)
				default:
					// Soft-failed events are accepted as far as the sender is
					// concerned (spec: soft failure is invisible to it).
					set(p.EventID(), "")
				}
			}
		}()
	}
	wg.Wait()
	return results
}

// processEDU applies one EDU. EDUs are best effort: a bad one is logged
// and skipped, never failing the transaction.
func (t *transactions) processEDU(ctx context.Context, origin spec.ServerName, eduType string, content json.RawMessage) {
	log := t.rf.log.WithField("origin", origin).WithField("edu_type", eduType)
	var err error
	switch eduType {
	case spec.MTyping:
		err = t.typingEDU(ctx, origin, content)
	case spec.MReceipt:
		err = t.receiptEDU(ctx, origin, content)
	case spec.MDirectToDevice:
		err = t.toDeviceEDU(ctx, origin, content)
	case spec.MPresence:
		err = t.presenceEDU(ctx, origin, content)
	case "m.device_list_update":
		err = t.deviceListEDU(ctx, origin, content)
	case "m.signing_key_update":
		err = t.signingKeyEDU(ctx, origin, content)
	default:
		// Unstable and unknown EDU types (the spec: ignore them).
		log.Debug("Ignoring an EDU type this server does not handle")
		return
	}
	if err != nil {
		log.WithError(err).Info("Ignoring a bad EDU")
	}
}

// remoteMember loads the room an EDU names and checks that the user is
// of the origin server and joined to it.
func (t *transactions) remoteMember(ctx context.Context, origin spec.ServerName, roomID, userID string) (storage.Room, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != origin {
		return storage.Room{}, errors.New("user " + userID + " is not of the origin server")
	}
	room, err := t.rf.rs.Room(ctx, roomID)
	if err != nil {
		return room, err
	}
	if t.acl != nil {
		if err := t.acl(ctx, roomID, origin); err != nil {
			return room, err
		}
	}
	m, err := t.rf.rs.Membership(ctx, room, userID)
	if err != nil {
		return room, err
	}
	if m != spec.Join {
		return room, errors.New(userID + " is not joined to " + roomID)
	}
	return room, nil
}

func (t *transactions) joinedLocalUsers(ctx context.Context, room storage.Room) ([]string, error) {
	members, err := t.db.Members(ctx, room.NID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range members {
		if m.Membership != spec.Join {
			continue
		}
		if uid, err := spec.NewUserID(m.UserID, true); err == nil && uid.Domain() == t.rf.serverName {
			out = append(out, m.UserID)
		}
	}
	return out, nil
}

// remoteTypingTimeout is how long a remote user shows as typing without
// a refresh (the spec leaves it to the receiver; servers resend every
// few seconds while the user types).
const remoteTypingTimeout = 30 * time.Second

func (t *transactions) typingEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	room, err := t.remoteMember(ctx, origin, c.RoomID, c.UserID)
	if err != nil {
		return err
	}
	wake, err := t.joinedLocalUsers(ctx, room)
	if err != nil {
		return err
	}
	t.typing.Set(room.RoomID, c.UserID, c.Typing, remoteTypingTimeout, wake)
	return nil
}

func (t *transactions) receiptEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	// {room_id: {m.read: {user_id: {event_ids: [...], data: {ts, thread_id}}}}}
	var c map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	for roomID, types := range c {
		for typ, users := range types {
			if typ != storage.ReceiptRead {
				continue // private receipts never leave their server
			}
			for userID, r := range users {
				if len(r.EventIDs) == 0 {
					continue
				}
				room, err := t.remoteMember(ctx, origin, roomID, userID)
				if err != nil {
					return err
				}
				ev, err := t.rf.rs.Event(ctx, r.EventIDs[0])
				if err != nil || ev.RoomNID != room.NID || ev.StreamPos == 0 {
					continue // an event we do not have (yet) cannot be pointed at
				}
				wake, err := t.joinedLocalUsers(ctx, room)
				if err != nil {
					return err
				}
				err = t.stream.Write(1, wake, func(pos int64) error {
					_, err := t.db.PutReceipt(ctx, storage.Receipt{
						RoomNID: room.NID, UserID: userID, Type: typ, ThreadID: r.Data.ThreadID, EventID: ev.EventID(),
						EventPos: ev.StreamPos, TS: r.Data.TS, StreamPos: pos,
					})
					return err
				})
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}
