-- OpenID tokens (spec: POST /user/{userId}/openid/request_token), which
-- third parties exchange for the user's ID at the federation endpoint
-- /openid/userinfo. Stored as SHA-256 hashes only, like access tokens;
-- they expire, and expired ones are swept when new ones are issued.
CREATE TABLE openid_tokens (
    token_hash BYTEA PRIMARY KEY, -- only: postgres
    token_hash BLOB PRIMARY KEY, -- only: sqlite
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expires ON openid_tokens (expires_ts);
