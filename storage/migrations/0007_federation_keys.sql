-- Signing keys of other servers (federation), fetched from the servers
-- themselves or through notaries, cached so that signatures on requests
-- and events can be checked without asking again.
CREATE TABLE federation_server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    -- Unpadded base64 of the ed25519 public key.
    public_key     TEXT NOT NULL,
    -- Until when the key may be trusted without asking again; 0 for keys
    -- that are only known as old ones.
    valid_until_ts BIGINT NOT NULL,
    -- When the server stopped using the key; 0 while it is current.
    expired_ts     BIGINT NOT NULL,
    fetched_ts     BIGINT NOT NULL,
    -- The signed /_matrix/key/v2/server response the key came in, which the
    -- notary endpoints serve again; NULL when it came some other way.
    response_json  TEXT,
    PRIMARY KEY (server_name, key_id)
);
