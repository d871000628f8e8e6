-- Receipts (spec: "Receipts"): only the latest one per user, receipt type
-- and thread is kept, since receipts mean "read up to". thread_id is ''
-- for unthreaded receipts, 'main' or a thread root's event ID otherwise.
CREATE TABLE receipts_latest (
    room_nid     BIGINT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    -- Stream position of the event the receipt points at: receipts never
    -- move to an earlier event.
    event_pos    BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    -- Position of the receipt itself in the global stream, for "what
    -- changed since" queries of sync.
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_nid, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_latest_stream ON receipts_latest (room_nid, stream_pos);
-- For the highest persisted stream position at start-up.
CREATE INDEX receipts_latest_pos ON receipts_latest (stream_pos);
