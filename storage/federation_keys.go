package storage

import (
	"context"
	"database/sql"
)

// ServerKey is a row of federation_server_keys: one signing key of another
// server.
type ServerKey struct {
	ServerName string
	KeyID      string
	// PublicKey is the unpadded base64 ed25519 key.
	PublicKey    string
	ValidUntilTS int64 // 0 for a key only known as old
	ExpiredTS    int64 // 0 while current
	FetchedTS    int64
	// Response is the signed key response the key came in, or nil.
	Response []byte
}

// ServerKeys returns every stored key of a server.
func (o ops) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := o.q.query(ctx, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response_json
		FROM federation_server_keys WHERE server_name = $1 ORDER BY key_id`, serverName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		var k ServerKey
		var resp sql.NullString
		if err := rows.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS, &resp); err != nil {
			return nil, err
		}
		if resp.Valid {
			k.Response = []byte(resp.String)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// StoreServerKey inserts or updates a key. A key's validity only grows (a
// notary's older answer must not shorten what the server itself said), and
// a stored response is kept when the new row brings none.
func (o ops) StoreServerKey(ctx context.Context, k ServerKey) error {
	var resp sql.NullString
	if k.Response != nil {
		resp = sql.NullString{String: string(k.Response), Valid: true}
	}
	_, err := o.q.exec(ctx, `INSERT INTO federation_server_keys
		(server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response_json)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (server_name, key_id) DO UPDATE SET
			public_key = excluded.public_key,
			valid_until_ts = CASE WHEN excluded.valid_until_ts > federation_server_keys.valid_until_ts
				THEN excluded.valid_until_ts ELSE federation_server_keys.valid_until_ts END,
			expired_ts = excluded.expired_ts,
			fetched_ts = excluded.fetched_ts,
			response_json = COALESCE(excluded.response_json, federation_server_keys.response_json)`,
		k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, k.FetchedTS, resp)
	return err
}
