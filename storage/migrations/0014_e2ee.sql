-- End-to-end encryption keys (spec: Client-Server API, "End-to-End
-- Encryption"). Keys are kept as the JSON the client uploaded, since
-- their signatures cover that exact object; signatures added later go to
-- e2ee_signatures and are merged in when keys are read.

-- Identity keys of local devices; they go with the device.
CREATE TABLE e2ee_device_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id),
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);

-- Unclaimed one-time keys; claiming one deletes it.
CREATE TABLE e2ee_one_time_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id, algorithm, key_id),
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);

-- One fallback key per device and algorithm, handed out when the one-time
-- keys run out; it stays until replaced, and used tells sync to ask for a
-- new one.
CREATE TABLE e2ee_fallback_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (localpart, device_id, algorithm),
    FOREIGN KEY (localpart, device_id) REFERENCES accounts_devices (localpart, device_id) ON DELETE CASCADE
);

-- Cross-signing keys of local users: key_type is master, self_signing or
-- user_signing.
CREATE TABLE e2ee_cross_signing_keys (
    localpart TEXT NOT NULL REFERENCES accounts_users (localpart),
    key_type  TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, key_type)
);

-- Signatures uploaded through /keys/signatures/upload. The target is a
-- device (target_key_id = device ID) or a cross-signing key (its public
-- key). A signature by another user (a user-signing key's) is shown to
-- its signer only.
CREATE TABLE e2ee_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The latest change of each user's devices or keys (local users and the
-- remote users other servers told us about), at a position of the global
-- stream: /sync's device_lists and /keys/changes read it, and for local
-- users it versions the device list sent over federation (stream_id).
CREATE TABLE e2ee_device_list_changes (
    user_id    TEXT PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX e2ee_device_list_changes_pos ON e2ee_device_list_changes (stream_pos);
