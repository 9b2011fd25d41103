-- Durable inbound federation (issue 8): PDUs received in PUT /send are
-- staged here before they are processed, so that a crash of the
-- federation_inbound instance between answering and processing loses
-- nothing.

-- One row per (origin, txn_id) seen: a retried /send with the same ID is not
-- staged twice. response_json is the answer once the request completed (a
-- retry gets it back); NULL while the transaction is being processed, or if
-- the instance died before answering (its PDUs are still staged below).
-- Rows are purged after a day (Synapse keeps received transaction IDs as
-- long).
CREATE TABLE federation_inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    response_json TEXT,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_transactions_ts ON federation_inbound_transactions (received_ts);

-- PDUs received and not processed yet, per room in arrival (id) order. A row
-- is deleted once its event was persisted, rejected or dropped; processing
-- again an event already stored is a no-op, so a crash between the two only
-- costs a repeated check. attempts counts processing attempts that failed
-- for reasons that may go away (the room's events writer unreachable...).
CREATE TABLE federation_inbound_staging (
    id BIGSERIAL PRIMARY KEY,
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pdu_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX federation_inbound_staging_room ON federation_inbound_staging (room_id, id);
CREATE INDEX federation_inbound_staging_txn ON federation_inbound_staging (origin, txn_id);

-- Which federation_inbound instance processes a room's staged PDUs now: one
-- at a time per room, so each room's PDUs are handled in arrival order. A
-- lease, renewed while processing; an instance that died loses it when
-- expires_ts passes (or at once when it restarts under the same name).
-- token tells one process lifetime of an instance from the next.
CREATE TABLE federation_inbound_room_leases (
    room_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
