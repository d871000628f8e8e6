package clientapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
	"github.com/veche/veche/storage"
)

// EDUQueue sends EDUs to other servers: the federation sender.
type EDUQueue interface {
	QueueEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU, persistent bool) error
}

// toDeviceTxnRetention is how long a PUT /sendToDevice transaction ID is
// remembered for retries.
const toDeviceTxnRetention = 24 * time.Hour

// directToDevice is the content of an m.direct_to_device EDU.
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// errToDeviceDone rolls back a send that a concurrent retry completed.
var errToDeviceDone = errors.New("to-device transaction already complete")

// sendToDevice is PUT /sendToDevice/{eventType}/{txnId}. Local devices get
// the messages in their inboxes (unknown users and devices are dropped,
// as the spec says); other servers' users get them through one
// m.direct_to_device EDU per server, queued persistently.
//
// The request is idempotent per device, event type and transaction ID.
// Its EDUs are queued before the local messages are stored, under a
// message ID kept with the transaction: a retry after a failure in
// between queues them again under the same ID, which the receivers
// deduplicate, while the local messages are stored once, together with
// the transaction's completion.
func (a *API) sendToDevice(r *http.Request) (any, error) {
	typ, txnID := r.PathValue("eventType"), r.PathValue("txnId")
	if !validEventType(typ) || txnID == "" || len(txnID) > maxTxnIDBytes {
		return nil, mxerr.InvalidParam("Invalid event type or transaction ID")
	}
	body, err := httpapi.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpapi.UnmarshalObject(body, &req); err != nil {
		return nil, err
	}
	if req.Messages == nil {
		return nil, mxerr.MissingParam("messages is required")
	}
	if bytes.Contains(body, []byte(`\u0000`)) {
		return nil, mxerr.BadJSON("Messages must not contain NUL characters")
	}
	server := a.accounts.ServerName()
	local := storage.ToDeviceMessages{}
	var wake []string
	remote := map[spec.ServerName]map[string]map[string]json.RawMessage{}
	for userID, devices := range req.Messages {
		uid, err := spec.NewUserID(userID, true)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid user ID: " + userID)
		}
		for _, content := range devices {
			if !isJSONObject(content) {
				return nil, mxerr.BadJSON("Message contents must be JSON objects")
			}
		}
		if len(devices) == 0 {
			continue
		}
		if uid.Domain() == server {
			local[uid.Local()] = devices
			wake = append(wake, uid.String())
			continue
		}
		if remote[uid.Domain()] == nil {
			remote[uid.Domain()] = map[string]map[string]json.RawMessage{}
		}
		remote[uid.Domain()][userID] = devices
	}

	ctx := r.Context()
	me := requester(r)
	now := a.now()
	messageID, done, err := a.db.ClaimToDeviceTxn(ctx, me.Localpart(), me.DeviceID, typ, txnID, newMessageID(), now.UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.UnknownToken("The device was deleted", false)
	}
	if err != nil {
		return nil, err
	}
	if done {
		return struct{}{}, nil
	}
	if err := a.queueToDevice(ctx, me.UserID.String(), typ, messageID, remote); err != nil {
		return nil, err
	}
	store := func(pos int64) error {
		return a.db.Transact(ctx, func(tx *storage.Tx) error {
			ok, err := tx.FinishToDeviceTxn(ctx, me.Localpart(), me.DeviceID, typ, txnID)
			if err != nil {
				return err
			}
			if !ok {
				return errToDeviceDone
			}
			if len(local) > 0 {
				if _, err := tx.PutToDevice(ctx, me.UserID.String(), typ, local, pos); err != nil {
					return err
				}
			}
			return tx.PruneToDeviceTxns(ctx, now.Add(-toDeviceTxnRetention).UnixMilli())
		})
	}
	if len(local) > 0 {
		err = a.stream.Write(1, wake, store)
	} else {
		err = store(0) // nothing for the stream
	}
	if err != nil && !errors.Is(err, errToDeviceDone) {
		return nil, err
	}
	return struct{}{}, nil
}

// queueToDevice queues one m.direct_to_device EDU per remote server.
func (a *API) queueToDevice(ctx context.Context, sender, typ, messageID string, remote map[spec.ServerName]map[string]map[string]json.RawMessage) error {
	if len(remote) == 0 {
		return nil
	}
	if a.edus == nil {
		a.log.WithField("servers", len(remote)).Debug("Federation is off: dropping to-device messages for other servers' users")
		return nil
	}
	servers := make([]spec.ServerName, 0, len(remote))
	for s := range remote {
		servers = append(servers, s)
	}
	slices.Sort(servers)
	for _, s := range servers {
		content, err := json.Marshal(directToDevice{Sender: sender, Type: typ, MessageID: messageID, Messages: remote[s]})
		if err != nil {
			return err
		}
		edu := gomatrixserverlib.EDU{Type: spec.MDirectToDevice, Content: content}
		if err := a.edus.QueueEDU(ctx, []spec.ServerName{s}, edu, true); err != nil {
			return err
		}
	}
	return nil
}

// newMessageID returns a random m.direct_to_device message ID: 22
// characters, within the spec's 32.
func newMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
