-- Transactions received from other servers (owned by federation): the
-- answer is kept so that a retried transaction gets the same answer and
-- its PDUs and EDUs are not processed twice (spec: "Transactions").
CREATE TABLE federation_inbound_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    response    TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);
