package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
)

// OpenID tokens are looked up by the SHA-256 of the token: the database
// never holds one that could be used as it is.
func openIDTokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// PutOpenIDToken stores an OpenID token of a user that is valid until
// expiresTS (milliseconds), and deletes the tokens that expired by nowTS.
func (o ops) PutOpenIDToken(ctx context.Context, token, userID string, expiresTS, nowTS int64) error {
	if _, err := o.q.exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowTS); err != nil {
		return err
	}
	_, err := o.q.exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		openIDTokenHash(token), userID, expiresTS)
	return err
}

// OpenIDTokenOwner returns the user an OpenID token was issued to, or
// ErrNotFound when the token is unknown or expired at nowTS.
func (o ops) OpenIDTokenOwner(ctx context.Context, token string, nowTS int64) (string, error) {
	var userID string
	err := o.q.queryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		openIDTokenHash(token), nowTS).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return userID, err
}
