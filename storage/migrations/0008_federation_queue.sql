-- Outbound federation (federation/sender): what waits to be sent to each
-- destination server, the sender's place in the global stream, and the
-- backoff of destinations that failed.

-- Where each consumer of the global stream has read up to. Consumers
-- advance it in the same transaction as the work they derive from the
-- stream, so that a crash neither loses nor repeats anything.
CREATE TABLE stream_consumers (
    consumer TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

-- PDUs waiting for a destination, sent in id order.
CREATE TABLE federation_queue_pdus (
    id          BIGSERIAL PRIMARY KEY, -- only: postgres
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    destination TEXT NOT NULL,
    event_nid   BIGINT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus (destination, id);

-- Persistent EDUs (receipts, later device lists and to-device messages)
-- waiting for a destination. A row with a coalesce_key replaces an unsent
-- row of the same key: a newer receipt of a user in a thread supersedes
-- the older one.
CREATE TABLE federation_queue_edus (
    id           BIGSERIAL PRIMARY KEY, -- only: postgres
    id           INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    destination  TEXT NOT NULL,
    edu_type     TEXT NOT NULL,
    content      TEXT NOT NULL,
    coalesce_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus (destination, id);
CREATE INDEX federation_queue_edus_key ON federation_queue_edus (destination, coalesce_key) WHERE coalesce_key <> '';

-- Destinations whose last transaction failed: no attempt before
-- retry_at_ts (ms) unless they show signs of life.
CREATE TABLE federation_queue_backoff (
    destination TEXT PRIMARY KEY,
    failures    INTEGER NOT NULL,
    retry_at_ts BIGINT NOT NULL
);
