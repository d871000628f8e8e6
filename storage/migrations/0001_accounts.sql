-- Counters for stream positions. "stream" orders everything a client syncs
-- (account data now; events, receipts, device lists later) in one sequence.
CREATE TABLE storage_sequences (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO storage_sequences (name, value) VALUES ('stream', 0);
-- Numeric localparts of guest accounts.
INSERT INTO storage_sequences (name, value) VALUES ('guest', 0);

-- Local accounts, keyed by localpart.
CREATE TABLE accounts_users (
    localpart      TEXT PRIMARY KEY,
    -- NULL: the account cannot log in with a password.
    password_hash  TEXT,
    created_ts     BIGINT NOT NULL,
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest       BOOLEAN NOT NULL DEFAULT FALSE,
    user_type      TEXT,
    -- NULL while the account is active.
    deactivated_ts BIGINT,
    erased         BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE accounts_devices (
    localpart            TEXT NOT NULL REFERENCES accounts_users (localpart),
    device_id            TEXT NOT NULL,
    display_name         TEXT,
    created_ts           BIGINT NOT NULL,
    last_seen_ts         BIGINT,
    last_seen_ip         TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (localpart, device_id)
);

-- Refresh tokens, stored as SHA-256 hashes. A refresh token that was
-- exchanged stays valid until its successor is first used (spec: a client
-- that lost the /refresh response may retry).
CREATE TABLE accounts_refresh_tokens (
    token_hash       BYTEA PRIMARY KEY, -- only: postgres
    token_hash       BLOB PRIMARY KEY, -- only: sqlite
    localpart        TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    expires_ts       BIGINT,
    -- The refresh token this one was issued in exchange for.
    supersedes       BYTEA, -- only: postgres
    supersedes       BLOB, -- only: sqlite
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX accounts_refresh_tokens_device ON accounts_refresh_tokens (localpart, device_id);
CREATE INDEX accounts_refresh_tokens_supersedes ON accounts_refresh_tokens (supersedes);

-- Access tokens, stored as SHA-256 hashes only.
CREATE TABLE accounts_access_tokens (
    token_hash    BYTEA PRIMARY KEY, -- only: postgres
    token_hash    BLOB PRIMARY KEY, -- only: sqlite
    localpart     TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    -- NULL: does not expire (issued without a refresh token).
    expires_ts    BIGINT,
    -- The refresh token issued together with this access token.
    refresh_hash  BYTEA, -- only: postgres
    refresh_hash  BLOB, -- only: sqlite
    -- Set until first use: the refresh token that was exchanged for this
    -- one, revoked (with its access tokens) when this token is first used.
    supersedes    BYTEA, -- only: postgres
    supersedes    BLOB, -- only: sqlite
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX accounts_access_tokens_device ON accounts_access_tokens (localpart, device_id);
CREATE INDEX accounts_access_tokens_refresh ON accounts_access_tokens (refresh_hash);
CREATE INDEX accounts_access_tokens_supersedes ON accounts_access_tokens (supersedes);

-- Profile fields (displayname, avatar_url, m.tz and custom keys), one row
-- per field, value as JSON.
CREATE TABLE accounts_profile_fields (
    localpart  TEXT NOT NULL REFERENCES accounts_users (localpart),
    field      TEXT NOT NULL,
    value_json TEXT NOT NULL,
    PRIMARY KEY (localpart, field)
);

-- Global (room_id = '') and per-room account data.
CREATE TABLE accounts_account_data (
    localpart    TEXT NOT NULL REFERENCES accounts_users (localpart),
    room_id      TEXT NOT NULL,
    type         TEXT NOT NULL,
    content_json TEXT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (localpart, room_id, type)
);
CREATE INDEX accounts_account_data_stream ON accounts_account_data (localpart, stream_pos);

-- Sync filters; identical filters of one user share an ID.
CREATE TABLE accounts_filters (
    localpart   TEXT NOT NULL REFERENCES accounts_users (localpart),
    filter_id   BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    -- SHA-256 of filter_json, hex: finds an identical filter.
    filter_hash TEXT NOT NULL,
    PRIMARY KEY (localpart, filter_id)
);
CREATE UNIQUE INDEX accounts_filters_hash ON accounts_filters (localpart, filter_hash);
