package e2ee

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/storage"
)

// QueryResponse is the answer to POST /keys/query (and, without failures
// and user-signing keys, to the federation's user/keys/query).
type QueryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

func newQueryResponse() *QueryResponse {
	return &QueryResponse{
		Failures: map[string]any{}, DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
}

// Query returns the device and cross-signing keys of the given users (all
// their devices when the list is empty) as requester sees them: local
// users' from storage, remote users' from their servers, asked in
// parallel within timeout (0: the default). A server that does not
// answer is listed in failures.
func (s *Service) Query(ctx context.Context, requester string, users map[string][]string, timeout time.Duration) (*QueryResponse, error) {
	local := map[string][]string{}
	remote := map[spec.ServerName]map[string][]string{}
	for u, devices := range users {
		server := serverOf(u)
		switch {
		case server == "":
			continue // not a user ID: nothing to say about it
		case server == s.serverName:
			local[u] = devices
		default:
			if remote[server] == nil {
				remote[server] = map[string][]string{}
			}
			if devices == nil {
				devices = []string{}
			}
			remote[server][u] = devices
		}
	}
	resp, err := s.queryLocal(ctx, requester, local)
	if err != nil {
		return nil, err
	}
	if len(remote) == 0 {
		return resp, nil
	}
	askServers(ctx, timeout, remote, s.queryRemote, func(server spec.ServerName, users map[string][]string, keys RemoteKeys, err error) {
		if err != nil {
			s.log.WithError(err).WithField("server", server).Info("Querying another server's keys failed")
			resp.Failures[string(server)] = failure(err)
			return
		}
		mergeRemote(resp, server, users, keys)
	})
	// The requester's own signatures of remote users' master keys (made
	// with their user-signing key) are kept here: add them.
	for u, raw := range resp.MasterKeys {
		if s.isLocal(u) {
			continue
		}
		sigs, err := s.db.KeySignatures(ctx, u, []string{publicKeyOf(raw)}, requester)
		if err != nil {
			return nil, err
		}
		var mine []storage.KeySignature
		for _, sig := range sigs {
			if sig.SignerUserID == requester {
				mine = append(mine, sig)
			}
		}
		resp.MasterKeys[u] = withSignatures(raw, mine)
	}
	return resp, nil
}

func (s *Service) queryRemote(ctx context.Context, server spec.ServerName, users map[string][]string) (RemoteKeys, error) {
	if s.remote == nil {
		return RemoteKeys{}, errFederationOff
	}
	return s.remote.QueryRemoteKeys(ctx, server, users)
}

// mergeRemote adds what a server answered about its own users; anything
// about other servers' users, or users nobody asked about, is dropped.
func mergeRemote(resp *QueryResponse, server spec.ServerName, asked map[string][]string, keys RemoteKeys) {
	for u, devices := range keys.DeviceKeys {
		if _, ok := asked[u]; !ok || serverOf(u) != server {
			continue
		}
		if devices == nil {
			devices = map[string]json.RawMessage{}
		}
		resp.DeviceKeys[u] = devices
	}
	for u, k := range keys.MasterKeys {
		if _, ok := asked[u]; ok && serverOf(u) == server {
			resp.MasterKeys[u] = k
		}
	}
	for u, k := range keys.SelfSigningKeys {
		if _, ok := asked[u]; ok && serverOf(u) == server {
			resp.SelfSigningKeys[u] = k
		}
	}
}

// QueryLocal answers a key query about local users for another server:
// users of other servers are left out, and only the users' own
// signatures are shown.
func (s *Service) QueryLocal(ctx context.Context, users map[string][]string) (*QueryResponse, error) {
	local := map[string][]string{}
	for u, d := range users {
		if s.isLocal(u) {
			local[u] = d
		}
	}
	return s.queryLocal(ctx, "", local)
}

// queryLocal reads local users' keys as viewer sees them (viewer "" for
// another server).
func (s *Service) queryLocal(ctx context.Context, viewer string, users map[string][]string) (*QueryResponse, error) {
	resp := newQueryResponse()
	for u, devices := range users {
		localpart, ok := s.localpart(u)
		if !ok {
			continue
		}
		keys, err := s.db.DeviceKeysOf(ctx, localpart, devices)
		if err != nil {
			return nil, err
		}
		out := map[string]json.RawMessage{}
		ids := make([]string, 0, len(keys))
		for _, k := range keys {
			ids = append(ids, k.DeviceID)
		}
		sigs, err := s.db.KeySignatures(ctx, u, ids, viewer)
		if err != nil {
			return nil, err
		}
		byDevice := map[string][]storage.KeySignature{}
		for _, sig := range sigs {
			byDevice[sig.TargetKeyID] = append(byDevice[sig.TargetKeyID], sig)
		}
		for _, k := range keys {
			out[k.DeviceID] = withSignatures(k.KeyJSON, byDevice[k.DeviceID])
			if viewer != "" {
				// Device names stay on this server: they tend to say
				// more about a person than other servers need to know
				// (Synapse's default too).
				out[k.DeviceID] = withDisplayName(out[k.DeviceID], k.DisplayName)
			}
		}
		resp.DeviceKeys[u] = out
		cross, err := s.crossSigningKeys(ctx, localpart, viewer)
		if err != nil {
			return nil, err
		}
		if k := cross[storage.CrossSigningMaster]; k != nil {
			resp.MasterKeys[u] = k
		}
		if k := cross[storage.CrossSigningSelfSigning]; k != nil {
			resp.SelfSigningKeys[u] = k
		}
		if k := cross[storage.CrossSigningUserSigning]; k != nil && viewer == u {
			resp.UserSigningKeys[u] = k
		}
	}
	return resp, nil
}

// crossSigningKeys returns a local user's cross-signing keys with the
// signatures viewer may see merged in.
func (s *Service) crossSigningKeys(ctx context.Context, localpart, viewer string) (map[string]json.RawMessage, error) {
	stored, err := s.db.CrossSigningKeys(ctx, localpart)
	if err != nil || len(stored) == 0 {
		return nil, err
	}
	userID := s.userID(localpart)
	pubs := map[string]string{}
	var ids []string
	for typ, raw := range stored {
		pub := publicKeyOf(raw)
		pubs[typ] = pub
		ids = append(ids, pub)
	}
	sigs, err := s.db.KeySignatures(ctx, userID, ids, viewer)
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for typ, raw := range stored {
		var mine []storage.KeySignature
		for _, sig := range sigs {
			if sig.TargetKeyID == pubs[typ] {
				mine = append(mine, sig)
			}
		}
		out[typ] = withSignatures(raw, mine)
	}
	return out, nil
}

// UserDevices answers GET /_matrix/federation/v1/user/devices/{userId}
// for a local user: every device (with its keys when it has some), the
// version of the list, and the user's master and self-signing keys.
func (s *Service) UserDevices(ctx context.Context, user spec.UserID) (map[string]any, error) {
	userID := user.String()
	devices, err := s.db.DevicesAndKeys(ctx, user.Local())
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(devices))
	for _, d := range devices {
		ids = append(ids, d.DeviceID)
	}
	sigs, err := s.db.KeySignatures(ctx, userID, ids, "")
	if err != nil {
		return nil, err
	}
	// Device names are left out, as in key queries from other servers.
	type device struct {
		DeviceID string          `json:"device_id"`
		Keys     json.RawMessage `json:"keys,omitempty"`
	}
	out := make([]device, 0, len(devices))
	for _, d := range devices {
		dev := device{DeviceID: d.DeviceID}
		if d.KeyJSON != nil {
			var mine []storage.KeySignature
			for _, sig := range sigs {
				if sig.TargetKeyID == d.DeviceID {
					mine = append(mine, sig)
				}
			}
			dev.Keys = withSignatures(d.KeyJSON, mine)
		}
		// A device without keys is listed without them, as Synapse
		// does: there is nothing to sign or verify.
		out = append(out, dev)
	}
	pos, err := s.db.DeviceListPos(ctx, userID)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"user_id": userID, "stream_id": pos, "devices": out}
	cross, err := s.crossSigningKeys(ctx, user.Local(), "")
	if err != nil {
		return nil, err
	}
	if k := cross[storage.CrossSigningMaster]; k != nil {
		resp["master_key"] = k
	}
	if k := cross[storage.CrossSigningSelfSigning]; k != nil {
		resp["self_signing_key"] = k
	}
	return resp, nil
}

// ClaimResponse is the answer to POST /keys/claim.
type ClaimResponse struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// Claim takes one one-time key (or, when they ran out, the fallback key)
// per requested device and algorithm: local devices' from storage, remote
// ones' from their servers within timeout (0: the default).
func (s *Service) Claim(ctx context.Context, req map[string]map[string]string, timeout time.Duration) (*ClaimResponse, error) {
	local := map[string]map[string]string{}
	remote := map[spec.ServerName]map[string]map[string]string{}
	for u, devices := range req {
		server := serverOf(u)
		switch {
		case server == "":
		case server == s.serverName:
			local[u] = devices
		default:
			if remote[server] == nil {
				remote[server] = map[string]map[string]string{}
			}
			remote[server][u] = devices
		}
	}
	keys, err := s.ClaimLocal(ctx, local)
	if err != nil {
		return nil, err
	}
	resp := &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: keys}
	if len(remote) == 0 {
		return resp, nil
	}
	claim := func(ctx context.Context, server spec.ServerName, users map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
		if s.remote == nil {
			return nil, errFederationOff
		}
		return s.remote.ClaimRemoteKeys(ctx, server, users)
	}
	askServers(ctx, timeout, remote, claim, func(server spec.ServerName, users map[string]map[string]string, got map[string]map[string]map[string]json.RawMessage, err error) {
		if err != nil {
			s.log.WithError(err).WithField("server", server).Info("Claiming another server's keys failed")
			resp.Failures[string(server)] = failure(err)
			return
		}
		for u, devices := range got {
			if _, ok := users[u]; ok && serverOf(u) == server {
				resp.OneTimeKeys[u] = devices
			}
		}
	})
	return resp, nil
}

// ClaimLocal claims keys of local devices (users of other servers are
// skipped); devices without a key of the algorithm are left out.
func (s *Service) ClaimLocal(ctx context.Context, req map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	users := make([]string, 0, len(req))
	for u := range req {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		localpart, ok := s.localpart(u)
		if !ok {
			continue
		}
		for deviceID, alg := range req[u] {
			k, ok, err := s.db.ClaimOneTimeKey(ctx, localpart, deviceID, alg)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if out[u] == nil {
				out[u] = map[string]map[string]json.RawMessage{}
			}
			out[u][deviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.JSON}
		}
	}
	return out, nil
}

// askServers asks every server its part of a request at once, within
// timeout (defaultTimeout when zero), and hands each answer to done, one
// at a time.
func askServers[Q, A any](ctx context.Context, timeout time.Duration, byServer map[spec.ServerName]Q,
	ask func(context.Context, spec.ServerName, Q) (A, error), done func(spec.ServerName, Q, A, error)) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, q := range byServer {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ask(ctx, server, q)
			mu.Lock()
			defer mu.Unlock()
			done(server, q, a, err)
		}()
	}
	wg.Wait()
}
