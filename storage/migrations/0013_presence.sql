-- Presence (spec: "Presence"): the latest state of every user this server
-- knows it for, local or remote. Only the latest is kept, like receipts.
CREATE TABLE presence_users (
    user_id          TEXT PRIMARY KEY,
    -- online, unavailable or offline.
    presence         TEXT NOT NULL,
    status_msg       TEXT,
    -- When the user last did something (ms since the epoch; 0 unknown).
    -- Kept absolute so that last_active_ago is current on every read.
    last_active_ts   BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    -- When the row was last written: for remote users, when their server
    -- last told us, so that silent servers' users time out.
    updated_ts       BIGINT NOT NULL,
    -- Position of the last change clients were told of in the global
    -- stream, for sync's "changed since" queries.
    stream_pos       BIGINT NOT NULL
);
CREATE INDEX presence_users_stream ON presence_users (stream_pos);
-- The sweeper's scan: everyone not offline.
CREATE INDEX presence_users_present ON presence_users (presence) WHERE presence <> 'offline';
