-- Send-to-device messaging (spec: client-server "Send-to-Device
-- messaging", server-server "Send-to-device messaging").

-- Messages waiting for a local device. A message is deleted once the
-- device acknowledges it by syncing from a token at or past the response
-- that carried it; deleting the device deletes its inbox.
CREATE TABLE todevice_inbox (
    id         BIGSERIAL PRIMARY KEY, -- only: postgres
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- only: sqlite
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    -- Position in the global stream of the write that delivered it.
    stream_pos BIGINT NOT NULL,
    -- The position (next_batch) of the first /sync response that carried
    -- it; NULL until one did.
    sent_pos   BIGINT,
    sender     TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX todevice_inbox_device ON todevice_inbox (localpart, device_id, stream_pos);
CREATE INDEX todevice_inbox_stream ON todevice_inbox (stream_pos);

-- The highest stream position to-device messaging used that no inbox row
-- may hold any more: of acknowledged (deleted) messages, and positions
-- taken to move a device's /sync past its since token. The stream
-- restarts above it, as above every persisted position (MaxStreamPos).
INSERT INTO storage_sequences (name, value) VALUES ('todevice_pos', 0);

-- Transactions of PUT /sendToDevice (spec: transaction identifiers are
-- scoped to a device and an endpoint path, which includes the event type).
-- message_id names the request's m.direct_to_device EDUs, so that a retry
-- after a partial failure re-sends them under the same ID, which the
-- receiving servers deduplicate.
CREATE TABLE todevice_client_txns (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    -- Set once the local messages are stored: the request is complete.
    done       BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, event_type, txn_id),
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX todevice_client_txns_ts ON todevice_client_txns (created_ts);

-- message_ids of m.direct_to_device EDUs received, so that an EDU sent
-- again is delivered once.
CREATE TABLE todevice_inbound (
    origin      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
CREATE INDEX todevice_inbound_ts ON todevice_inbound (received_ts);
