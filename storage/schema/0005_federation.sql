-- Federation (issue 8). Numbered 0060+ in the merged tree; this branch keeps
-- the numbering gap-free as storage.migrations requires.

-- Verify keys of other servers, one row per (server, key, who told us).
-- key_json is the whole /_matrix/key/v2/server response as received
-- (canonical JSON, signatures included) so that we can serve it again as a
-- notary. valid_until_ts is the effective validity: the lesser of the
-- published valid_until_ts and 7 days after fetching; for keys listed under
-- old_verify_keys it is their expired_ts, also kept in expired_ts.
CREATE TABLE server_signature_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    from_server TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id, from_server)
);

-- Backoff state of each remote server we talk to. No row: no backoff.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failure_count INTEGER NOT NULL DEFAULT 0,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0
);

-- The durable outbound queue: PDUs and EDUs waiting to be sent to a
-- destination, in id order. A PDU is queued at most once per destination.
-- EDUs with a coalesce_key replace an earlier unsent EDU with the same key
-- (typing, presence: only the latest matters).
CREATE TABLE federation_outbox (
    id BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
    event_id TEXT,
    -- The PDU's room (NULL for EDUs and room-less PDUs): catch-up after a
    -- long outage keeps only the newest PDU of each room.
    room_id TEXT,
    coalesce_key TEXT,
    payload TEXT NOT NULL,
    queued_ts BIGINT NOT NULL,
    CHECK ((kind = 'pdu') = (event_id IS NOT NULL))
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, kind, id);
CREATE UNIQUE INDEX federation_outbox_pdu ON federation_outbox (destination, event_id) WHERE kind = 'pdu';
CREATE INDEX federation_outbox_room ON federation_outbox (destination, room_id, id) WHERE kind = 'pdu';

-- The one transaction in flight per destination. It is retried with the
-- same txn_id and body until the destination accepts it (the receiver
-- deduplicates on origin + txn_id); then it and its outbox rows go.
CREATE TABLE federation_transactions_in_flight (
    destination TEXT PRIMARY KEY,
    txn_id TEXT NOT NULL,
    body TEXT NOT NULL,
    outbox_ids BIGINT[] NOT NULL,
    created_ts BIGINT NOT NULL
);
