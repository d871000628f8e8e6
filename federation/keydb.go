package federation

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/veche/veche/storage"
)

// keyCacheSize bounds the in-memory key cache; past it the cache starts
// over (keys stay in the database).
const keyCacheSize = 10000

// keyDatabase is gomatrixserverlib's KeyDatabase over
// federation_server_keys, with an in-memory cache in front. This server's
// own keys are answered from memory and never stored.
type keyDatabase struct {
	db    *storage.DB
	local spec.ServerName
	own   func() map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult
	now   func() time.Time
	log   logrus.FieldLogger

	mu    sync.Mutex
	cache map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

func newKeyDatabase(db *storage.DB, local spec.ServerName, own func() map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult, now func() time.Time, log logrus.FieldLogger) *keyDatabase {
	return &keyDatabase{db: db, local: local, own: own, now: now, log: log,
		cache: map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}}
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (k *keyDatabase) FetcherName() string { return "veche key database" }

// FetchKeys implements gomatrixserverlib.KeyFetcher: the keys it knows,
// whatever their validity (the key ring decides whether to fetch anew).
func (k *keyDatabase) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	missing := map[spec.ServerName]bool{}
	var own map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult
	k.mu.Lock()
	for req := range requests {
		if req.ServerName == k.local {
			if own == nil {
				own = k.own()
			}
			if res, ok := own[req.KeyID]; ok {
				out[req] = res
			}
			continue
		}
		if res, ok := k.cache[req]; ok {
			out[req] = res
			continue
		}
		missing[req.ServerName] = true
	}
	k.mu.Unlock()
	for _, server := range sortedServers(missing) {
		rows, err := k.db.ServerKeys(ctx, string(server))
		if err != nil {
			return nil, err
		}
		k.mu.Lock()
		for _, row := range rows {
			res, err := lookupResult(row)
			if err != nil {
				k.log.WithError(err).WithField("server", server).Warn("Ignoring a stored server key")
				continue
			}
			req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: server, KeyID: gomatrixserverlib.KeyID(row.KeyID)}
			k.remember(req, res)
			if _, asked := requests[req]; asked {
				out[req] = res
			}
		}
		k.mu.Unlock()
	}
	return out, nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase. The key ring hands
// back everything it used, known or new; only changes reach the database.
func (k *keyDatabase) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	var changed []storage.ServerKey
	k.mu.Lock()
	for req, res := range results {
		if req.ServerName == k.local {
			continue
		}
		if old, ok := k.cache[req]; ok && sameKey(old, res) {
			continue
		}
		k.remember(req, res)
		changed = append(changed, storage.ServerKey{
			ServerName: string(req.ServerName), KeyID: string(req.KeyID),
			PublicKey: res.Key.Encode(), ValidUntilTS: int64(res.ValidUntilTS), ExpiredTS: int64(res.ExpiredTS),
			FetchedTS: k.now().UnixMilli(),
		})
	}
	k.mu.Unlock()
	return k.store(ctx, changed)
}

// storeResponse records a server's own signed key response, already
// checked with CheckKeys, so that the notary endpoints can serve it again.
func (k *keyDatabase) storeResponse(ctx context.Context, keys gomatrixserverlib.ServerKeys) error {
	if keys.ServerName == k.local {
		return nil
	}
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for id, vk := range keys.VerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: vk, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired, ValidUntilTS: keys.ValidUntilTS,
		}
	}
	for id, old := range keys.OldVerifyKeys {
		results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: old.VerifyKey, ExpiredTS: old.ExpiredTS, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid,
		}
	}
	now := k.now().UnixMilli()
	rows := make([]storage.ServerKey, 0, len(results))
	k.mu.Lock()
	for req, res := range results {
		k.remember(req, res)
		rows = append(rows, storage.ServerKey{
			ServerName: string(req.ServerName), KeyID: string(req.KeyID),
			PublicKey: res.Key.Encode(), ValidUntilTS: int64(res.ValidUntilTS), ExpiredTS: int64(res.ExpiredTS),
			FetchedTS: now, Response: keys.Raw,
		})
	}
	k.mu.Unlock()
	return k.store(ctx, rows)
}

func (k *keyDatabase) store(ctx context.Context, rows []storage.ServerKey) error {
	if len(rows) == 0 {
		return nil
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].ServerName != rows[j].ServerName {
			return rows[i].ServerName < rows[j].ServerName
		}
		return rows[i].KeyID < rows[j].KeyID
	})
	return k.db.Transact(ctx, func(tx *storage.Tx) error {
		for _, row := range rows {
			if err := tx.StoreServerKey(ctx, row); err != nil {
				return err
			}
		}
		return nil
	})
}

// storedResponse is a key response kept for the notary endpoints.
type storedResponse struct {
	keys      gomatrixserverlib.ServerKeys
	fetchedTS int64
}

// responses returns the distinct signed key responses stored for a server,
// the one valid longest first.
func (k *keyDatabase) responses(ctx context.Context, server spec.ServerName) ([]storedResponse, error) {
	rows, err := k.db.ServerKeys(ctx, string(server))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []storedResponse
	for _, row := range rows {
		if row.Response == nil || seen[string(row.Response)] {
			continue
		}
		seen[string(row.Response)] = true
		var keys gomatrixserverlib.ServerKeys
		if err := keys.UnmarshalJSON(row.Response); err != nil || keys.ServerName != server {
			continue
		}
		out = append(out, storedResponse{keys: keys, fetchedTS: row.FetchedTS})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].keys.ValidUntilTS > out[j].keys.ValidUntilTS })
	return out, nil
}

// remember caches a key; k.mu is held.
func (k *keyDatabase) remember(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) {
	if len(k.cache) >= keyCacheSize {
		clear(k.cache)
	}
	k.cache[req] = res
}

func sameKey(a, b gomatrixserverlib.PublicKeyLookupResult) bool {
	return string(a.Key) == string(b.Key) && a.ExpiredTS == b.ExpiredTS && a.ValidUntilTS == b.ValidUntilTS
}

func lookupResult(row storage.ServerKey) (gomatrixserverlib.PublicKeyLookupResult, error) {
	key, err := base64.RawStdEncoding.DecodeString(row.PublicKey)
	if err != nil {
		return gomatrixserverlib.PublicKeyLookupResult{}, fmt.Errorf("key %s: %w", row.KeyID, err)
	}
	return gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(key)},
		ExpiredTS:    spec.Timestamp(row.ExpiredTS),
		ValidUntilTS: spec.Timestamp(row.ValidUntilTS),
	}, nil
}

// recordingKeyClient is the key client of the key ring's fetchers. It
// refuses denied servers and keeps every checked direct key response, so
// that this server can act as a notary for the servers it talks to.
type recordingKeyClient struct {
	gomatrixserverlib.KeyClient
	f *Federation
}

func (c *recordingKeyClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	if c.f.Denied(server) {
		return gomatrixserverlib.ServerKeys{}, fmt.Errorf("federation with %s is denied", server)
	}
	keys, err := c.KeyClient.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, c.f.now(), keys); checks.AllChecksOK {
		if err := c.f.keys.storeResponse(ctx, keys); err != nil {
			c.f.log.WithError(err).WithField("server", server).Warn("Could not store a key response")
		}
	}
	return keys, nil
}

func (c *recordingKeyClient) LookupServerKeys(ctx context.Context, notary spec.ServerName, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	if c.f.Denied(notary) {
		return nil, fmt.Errorf("federation with %s is denied", notary)
	}
	return c.KeyClient.LookupServerKeys(ctx, notary, requests)
}
