package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/veche/veche/internal/httpapi"
	"github.com/veche/veche/internal/mxerr"
)

const (
	// ownKeysValidity is how long others may use our key response before
	// asking again (Synapse's default refresh interval). Short enough that
	// a rotation spreads within a day.
	ownKeysValidity = 24 * time.Hour
	// notaryMaxServers caps the servers one notary query may name: each
	// may cost an outbound fetch.
	notaryMaxServers = 100
	// notaryParallel is how many servers a notary query fetches at once.
	notaryParallel = 8
	// notaryFetchTimeout bounds one fetch made for a notary query.
	notaryFetchTimeout = 10 * time.Second
)

func (f *Federation) registerKeyRoutes(rt *httpapi.Router) {
	f.handlePublic(rt, "GET /_matrix/key/v2/server", f.serverKeys)
	// The key ID suffix was removed from the spec, but older servers
	// still ask for it.
	f.handlePublic(rt, "GET /_matrix/key/v2/server/{keyID}", f.serverKeys)
	f.handlePublic(rt, "POST /_matrix/key/v2/query", f.notaryQuery)
	f.handlePublic(rt, "GET /_matrix/key/v2/query/{serverName}", f.notaryQueryOne)
}

// serverKeys is GET /_matrix/key/v2/server: this server's keys, signed.
func (f *Federation) serverKeys(*http.Request) (any, error) {
	raw, err := f.OwnServerKeys()
	if err != nil {
		return nil, err
	}
	return &httpapi.Response{Raw: raw, ContentType: "application/json"}, nil
}

// OwnServerKeys is this server's signed key response: the current key,
// the retired ones from old_signing_keys, valid for a day.
func (f *Federation) OwnServerKeys() ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    f.serverName,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{f.key.ID: {Key: spec.Base64Bytes(f.key.Public())}},
		OldVerifyKeys: f.oldKeys,
		ValidUntilTS:  spec.AsTimestamp(f.now().Add(ownKeysValidity)),
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(string(f.serverName), f.key.ID, f.key.PrivateKey, raw)
}

// notaryCriteria is what a notary query asks of one server's keys.
type notaryCriteria struct {
	keyIDs   []gomatrixserverlib.KeyID
	minValid spec.Timestamp
}

// notaryQuery is POST /_matrix/key/v2/query.
func (f *Federation) notaryQuery(r *http.Request) (any, error) {
	var body struct {
		ServerKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.ServerKeys == nil {
		return nil, mxerr.BadJSON("server_keys is required")
	}
	if len(body.ServerKeys) > notaryMaxServers {
		return nil, mxerr.InvalidParam("At most " + strconv.Itoa(notaryMaxServers) + " servers may be queried at once")
	}
	now := spec.AsTimestamp(f.now())
	queries := map[spec.ServerName]notaryCriteria{}
	for server, keys := range body.ServerKeys {
		c := notaryCriteria{minValid: now}
		for id, k := range keys {
			c.keyIDs = append(c.keyIDs, id)
			if k.MinimumValidUntilTS != nil && spec.Timestamp(*k.MinimumValidUntilTS) > c.minValid {
				c.minValid = spec.Timestamp(*k.MinimumValidUntilTS)
			}
		}
		queries[server] = c
	}
	return f.notaryAnswer(r.Context(), queries)
}

// notaryQueryOne is GET /_matrix/key/v2/query/{serverName}.
func (f *Federation) notaryQueryOne(r *http.Request) (any, error) {
	c := notaryCriteria{minValid: spec.AsTimestamp(f.now())}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, mxerr.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		if spec.Timestamp(ts) > c.minValid {
			c.minValid = spec.Timestamp(ts)
		}
	}
	return f.notaryAnswer(r.Context(), map[spec.ServerName]notaryCriteria{spec.ServerName(r.PathValue("serverName")): c})
}

// notaryAnswer collects the key responses for every queried server, each
// countersigned by this server, in a stable order.
func (f *Federation) notaryAnswer(ctx context.Context, queries map[spec.ServerName]notaryCriteria) (any, error) {
	servers := sortedServers(queries)
	answers := make([][]json.RawMessage, len(servers))
	sem := make(chan struct{}, notaryParallel)
	var wg sync.WaitGroup
	for i, server := range servers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			answers[i] = f.notaryKeys(ctx, server, queries[server])
		}()
	}
	wg.Wait()
	out := []json.RawMessage{}
	for _, a := range answers {
		out = append(out, a...)
	}
	return map[string]any{"server_keys": out}, nil
}

// notaryKeys answers a notary query for one server: the stored responses
// when they satisfy it, else a fresh one fetched from the server, else
// (the server being unreachable) whatever is stored, as the spec asks.
// Failures only make the answer empty.
func (f *Federation) notaryKeys(ctx context.Context, server spec.ServerName, c notaryCriteria) []json.RawMessage {
	log := f.log.WithField("server", server)
	if server == f.serverName {
		raw, err := f.OwnServerKeys()
		if err != nil {
			log.WithError(err).Error("Signing our own keys failed")
			return nil
		}
		return []json.RawMessage{raw}
	}
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok || f.Denied(server) {
		return nil
	}
	stored, err := f.keys.responses(ctx, server)
	if err != nil {
		log.WithError(err).Warn("Reading stored key responses failed")
	}
	if !satisfies(stored, c, f.now()) {
		fctx, cancel := context.WithTimeout(ctx, notaryFetchTimeout)
		kc := &recordingKeyClient{KeyClient: f.client, f: f}
		keys, err := kc.GetServerKeys(fctx, server)
		cancel()
		if checks, _ := gomatrixserverlib.CheckKeys(server, f.now(), keys); err == nil && checks.AllChecksOK {
			stored = append([]storedResponse{{keys: keys, fetchedTS: f.now().UnixMilli()}}, stored...)
		} else {
			log.WithError(err).Debug("Notary could not fetch fresh keys; answering from the cache")
		}
	}
	if len(stored) == 0 {
		return nil
	}
	// The newest response, plus older ones only for asked-for keys it
	// no longer lists.
	picked := []gomatrixserverlib.ServerKeys{stored[0].keys}
	for _, id := range c.keyIDs {
		if hasKey(stored[0].keys, id) {
			continue
		}
		for _, s := range stored[1:] {
			if hasKey(s.keys, id) {
				picked = append(picked, s.keys)
				break
			}
		}
	}
	var out []json.RawMessage
	seen := map[string]bool{}
	for _, k := range picked {
		if seen[string(k.Raw)] {
			continue
		}
		seen[string(k.Raw)] = true
		signed, err := gomatrixserverlib.SignJSON(string(f.serverName), f.key.ID, f.key.PrivateKey, k.Raw)
		if err != nil {
			log.WithError(err).Warn("Could not countersign a key response")
			continue
		}
		out = append(out, signed)
	}
	return out
}

// satisfies reports whether stored responses answer a query without a
// fetch: the newest is valid long enough, is younger than half its
// lifetime (spec: notaries should cache for half of it), and every asked
// key is known.
func satisfies(stored []storedResponse, c notaryCriteria, now time.Time) bool {
	if len(stored) == 0 {
		return false
	}
	newest := stored[0]
	valid := int64(newest.keys.ValidUntilTS)
	if valid < int64(c.minValid) {
		return false
	}
	if halfLife := newest.fetchedTS + (valid-newest.fetchedTS)/2; now.UnixMilli() >= halfLife {
		return false
	}
	for _, id := range c.keyIDs {
		known := false
		for _, s := range stored {
			if hasKey(s.keys, id) {
				known = true
				break
			}
		}
		if !known {
			return false
		}
	}
	return true
}

func hasKey(k gomatrixserverlib.ServerKeys, id gomatrixserverlib.KeyID) bool {
	if _, ok := k.VerifyKeys[id]; ok {
		return true
	}
	_, ok := k.OldVerifyKeys[id]
	return ok
}
