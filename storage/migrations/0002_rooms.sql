-- Rooms, events and state (owned by the roomserver).

CREATE TABLE rooms_rooms (
    room_nid      BIGSERIAL PRIMARY KEY, -- only: postgres
    room_nid      INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    room_id       TEXT NOT NULL UNIQUE,
    room_version  TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    -- The room's current state (resolved over the forward extremities).
    state_nid     BIGINT NOT NULL DEFAULT 0,
    -- "public" rooms are listed in the room directory.
    visibility    TEXT NOT NULL DEFAULT 'private'
);

-- Every event the server knows. The JSON is the canonical federation form
-- with signatures; clients get a form derived from it on read.
CREATE TABLE rooms_events (
    event_nid        BIGSERIAL PRIMARY KEY, -- only: postgres
    event_nid        INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    room_nid         BIGINT NOT NULL REFERENCES rooms_rooms (room_nid),
    event_id         TEXT NOT NULL UNIQUE,
    type             TEXT NOT NULL,
    state_key        TEXT, -- NULL for message events
    sender           TEXT NOT NULL,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- Position in the global stream; NULL for events clients never see
    -- (rejected, soft-failed, outliers).
    stream_pos       BIGINT,
    -- State before and after the event (snapshot IDs).
    state_before_nid BIGINT NOT NULL DEFAULT 0,
    state_after_nid  BIGINT NOT NULL DEFAULT 0,
    -- 0 accepted, 1 soft-failed, 2 rejected, 3 outlier.
    status           SMALLINT NOT NULL DEFAULT 0,
    rejection_reason TEXT,
    -- The accepted redaction of this event, if any.
    redacted_by      TEXT,
    -- For state events: the event this one replaced in the state before it.
    replaces_nid     BIGINT NOT NULL DEFAULT 0,
    -- m.relates_to of the content, for relations, threads and aggregations.
    relates_to       TEXT,
    rel_type         TEXT,
    json             TEXT NOT NULL
);
CREATE UNIQUE INDEX rooms_events_stream ON rooms_events (stream_pos) WHERE stream_pos IS NOT NULL;
CREATE INDEX rooms_events_room_stream ON rooms_events (room_nid, stream_pos) WHERE stream_pos IS NOT NULL;
CREATE INDEX rooms_events_topological ON rooms_events (room_nid, depth, stream_pos) WHERE stream_pos IS NOT NULL;
CREATE INDEX rooms_events_relations ON rooms_events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
CREATE INDEX rooms_events_membership ON rooms_events (state_key, stream_pos) WHERE type = 'm.room.member';
CREATE INDEX rooms_events_ts ON rooms_events (room_nid, origin_server_ts) WHERE stream_pos IS NOT NULL;
CREATE INDEX rooms_events_room_type ON rooms_events (room_nid, type, stream_pos) WHERE stream_pos IS NOT NULL;

-- The DAG: prev_events of each event.
CREATE TABLE rooms_event_edges (
    event_nid     BIGINT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);
CREATE INDEX rooms_event_edges_prev ON rooms_event_edges (prev_event_id);

-- Events no other event points to yet: the prev_events of the next event.
CREATE TABLE rooms_forward_extremities (
    room_nid  BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

-- State snapshots: each stores only its difference to a parent, and a
-- chain is cut by a full copy once it grows long, so that a message costs
-- no state rows and a state change costs one.
CREATE TABLE rooms_state_snapshots (
    snapshot_nid BIGSERIAL PRIMARY KEY, -- only: postgres
    snapshot_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    room_nid     BIGINT NOT NULL,
    parent_nid   BIGINT NOT NULL DEFAULT 0,
    chain_length INTEGER NOT NULL,
    -- Number of state entries in the full state.
    size         INTEGER NOT NULL
);

-- event_nid 0 removes the key relative to the parent.
CREATE TABLE rooms_state_entries (
    snapshot_nid BIGINT NOT NULL,
    type         TEXT NOT NULL,
    state_key    TEXT NOT NULL,
    event_nid    BIGINT NOT NULL,
    PRIMARY KEY (snapshot_nid, type, state_key)
);

-- The current state of every room, materialized for fast membership,
-- power level and visibility queries.
CREATE TABLE rooms_current_state (
    room_nid   BIGINT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    -- For m.room.member: the membership.
    membership TEXT,
    PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX rooms_current_state_members ON rooms_current_state (state_key, membership) WHERE type = 'm.room.member';

-- Client transaction IDs, per device, for idempotent sends.
CREATE TABLE rooms_transactions (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, txn_id)
);
CREATE INDEX rooms_transactions_event ON rooms_transactions (event_id);

-- Rooms a user forgot: they no longer appear anywhere for that user.
CREATE TABLE rooms_forgotten (
    room_nid BIGINT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (room_nid, user_id)
);

-- Stream positions are handed out in memory now (internal/stream), from
-- the highest one persisted; the counter row is no longer read.
DELETE FROM storage_sequences WHERE name = 'stream';

-- Room aliases (#alias:server) of this server.
CREATE TABLE rooms_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX rooms_aliases_room ON rooms_aliases (room_id);
