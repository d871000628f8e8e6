// Package e2ee keeps the public keys of end-to-end encryption (spec:
// Client-Server API, "End-to-End Encryption"; Server-Server API,
// "End-to-End Encryption" and "Device Management"): device identity
// keys, one-time and fallback keys, cross-signing keys and signatures,
// and the device lists that tell clients when to fetch keys again.
//
// Local users' keys live in storage. Remote users' keys are fetched from
// their servers on every query, without a cache: a remote server tells us
// of changes with m.device_list_update and m.signing_key_update EDUs,
// which become device list changes for the local users sharing a room
// with the remote user, so that their clients query again.
//
// A device list change is a row at a position of the global stream
// (internal/stream), so that /sync and /keys/changes find the changes
// between two sync tokens, and writing one wakes the syncing users it
// concerns. For local users the same position is the stream_id of the
// m.device_list_update EDUs sent to the servers sharing a room with them.
package e2ee

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/internal/stream"
	"github.com/veche/veche/storage"
)

// EDU types of this package (spec: Server-Server API).
const (
	EDUDeviceListUpdate = "m.device_list_update"
	EDUSigningKeyUpdate = "m.signing_key_update"
)

// Remote reaches other servers' key APIs; the federation component
// implements it.
type Remote interface {
	// QueryRemoteKeys is POST /_matrix/federation/v1/user/keys/query.
	QueryRemoteKeys(ctx context.Context, server spec.ServerName, deviceKeys map[string][]string) (RemoteKeys, error)
	// ClaimRemoteKeys is POST /_matrix/federation/v1/user/keys/claim;
	// it returns one_time_keys.
	ClaimRemoteKeys(ctx context.Context, server spec.ServerName, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// RemoteKeys is another server's answer to a key query. Keys stay raw
// JSON: their signatures cover the exact objects.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// EDUQueue sends EDUs to other servers; the federation sender implements
// it.
type EDUQueue interface {
	QueueEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU, persistent bool) error
}

// Deps are what the service needs.
type Deps struct {
	DB         *storage.DB
	Stream     *stream.Stream
	ServerName spec.ServerName
	Log        logrus.FieldLogger
}

// Service is the end-to-end key store. Create it with New; Connect it to
// federation before serving when federation is on.
type Service struct {
	db         *storage.DB
	stream     *stream.Stream
	serverName spec.ServerName
	log        logrus.FieldLogger

	// remote and edus are nil while federation is off.
	remote Remote
	edus   EDUQueue

	// userMu serializes device list changes of one user (striped by
	// user ID), so that the stream_id/prev_id chain of its EDUs follows
	// the order its positions were taken in.
	userMu [64]sync.Mutex
}

// New returns the key store.
func New(d Deps) *Service {
	if d.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		d.Log = l
	}
	return &Service{db: d.DB, stream: d.Stream, serverName: d.ServerName, log: d.Log}
}

// Connect gives the service the way to other servers: remote for key
// queries and claims, edus for device list and signing key updates. Call
// it once, before the server serves requests.
func (s *Service) Connect(remote Remote, edus EDUQueue) {
	s.remote, s.edus = remote, edus
}

// defaultTimeout bounds waiting for other servers when the client gives
// no timeout (spec: 10 seconds).
const defaultTimeout = 10 * time.Second

// serverOf is the server name of a user ID, "" when it is not one.
func serverOf(userID string) spec.ServerName {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return ""
	}
	return u.Domain()
}

// localpart returns the localpart of a local user ID; ok is false for
// malformed and remote IDs.
func (s *Service) localpart(userID string) (string, bool) {
	u, err := spec.NewUserID(userID, true)
	if err != nil || u.Domain() != s.serverName {
		return "", false
	}
	return u.Local(), true
}

func (s *Service) userID(localpart string) string {
	return "@" + localpart + ":" + string(s.serverName)
}

func (s *Service) isLocal(userID string) bool {
	_, server, ok := strings.Cut(userID, ":")
	return ok && spec.ServerName(server) == s.serverName
}

// userLock returns the mutex that orders a user's device list changes.
func (s *Service) userLock(userID string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	return &s.userMu[h.Sum32()%uint32(len(s.userMu))]
}
