-- End-to-end encryption key management (client-server API, "End-to-End
-- Encryption"): device identity keys, one-time and fallback keys,
-- cross-signing keys and signatures, and the ``device_lists`` stream.
-- Every table is keyed by user_id (Citus-distributable by user). Rows are
-- written by the owner of the user's ``device_lists`` shard, except one-time
-- keys, which /keys/claim deletes from any instance (DELETE ... RETURNING
-- hands each key out once).

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- The signed device_keys object exactly as uploaded (JSON text).
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- A string (curve25519) or a signed key object (signed_curve25519), as JSON text.
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per (device, algorithm); ``used`` once claimed.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The current cross-signing keys of a user (key_type: master, self_signing, user_signing).
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with /keys/signatures/upload: ``signer`` signed the
-- key ``target_key_id`` (a device ID or a cross-signing public key) of
-- ``target_user`` with its key ``signing_key_id`` (``ed25519:...``).
CREATE TABLE e2e_cross_signing_signatures (
    signer TEXT NOT NULL,
    signing_key_id TEXT NOT NULL,
    target_user TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key_id, signer, signing_key_id)
);

-- The ``device_lists`` stream: one row per changed device (or cross-signing
-- change, device_id NULL) of a user at a position of the user's shard.
CREATE TABLE device_lists_stream (
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT
);
CREATE INDEX device_lists_stream_position ON device_lists_stream (stream_shard, stream_position);
CREATE INDEX device_lists_stream_user ON device_lists_stream (user_id, stream_shard, stream_position);

-- Server-side key backup (client-server API, "Server-side key backups").
-- Version numbers are per user and never reused: a deleted version stays
-- as a row marked ``deleted``. ``etag`` moves whenever the version's keys change.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
