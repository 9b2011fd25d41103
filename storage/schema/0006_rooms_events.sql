-- Rooms, events and room state (issue 6). DESIGN.md §3 and §6.
--
-- Every room-scoped table carries room_id as the first column of its primary
-- key and every query filters on it, so the schema can be distributed by
-- room (Citus) without rewriting queries. Events are placed on the events
-- stream by (stream_shard, stream_position): the shard is
-- homeserver.sharding.shard_for(room_id) and the position comes from that
-- shard's sequence (storage.streams), allocated inside the transaction that
-- inserts the event.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    -- Published in the room directory (createRoom visibility=public).
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

CREATE TABLE events (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL,
    -- Topological ordering inside the room: (depth, stream_position).
    depth BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    -- content.membership of m.room.member events.
    membership TEXT,
    origin_server_ts BIGINT NOT NULL,
    -- The PDU exactly as built (canonical JSON text).
    json TEXT NOT NULL,
    rejected BOOLEAN NOT NULL DEFAULT FALSE,
    -- The event ID of the redaction that applies to this event, if any.
    redacted_by TEXT,
    -- State after this event (state_groups.state_group).
    state_group BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE UNIQUE INDEX events_stream ON events (stream_shard, stream_position);
CREATE INDEX events_topological ON events (room_id, depth, stream_position);
CREATE INDEX events_room_stream ON events (room_id, stream_position);

-- Room state snapshots as delta chains: the state of a group is the state of
-- its prev_group overlaid with its own rows. A group with no prev_group holds
-- the full state (written every so often to bound the chain length).
CREATE TABLE state_groups (
    room_id TEXT NOT NULL,
    state_group BIGINT NOT NULL,
    prev_group BIGINT,
    -- Number of prev_group links below this group.
    chain_length INTEGER NOT NULL,
    PRIMARY KEY (room_id, state_group)
);
CREATE SEQUENCE state_group_seq;

CREATE TABLE state_group_state (
    room_id TEXT NOT NULL,
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, state_group, type, state_key)
);

-- The room's current state, one row per (type, state_key).
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Events with no successor yet: the prev_events of the next event.
CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Each user's current membership of each room (mirrors current_state rows of
-- type m.room.member) with where it happened on the events stream.
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL,
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

-- Client transaction IDs (PUT /send/{type}/{txnId}, /redact/{id}/{txnId}):
-- a retried request returns the event created the first time, across
-- restarts. Scoped per device (per access token for clients without a
-- device) and per room, like the request path it deduplicates.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
);

CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Read receipts (m.read, m.read.private), per thread ('' = unthreaded).
-- Positions are on the receipts stream, sharded by room.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    data TEXT NOT NULL,
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE UNIQUE INDEX receipts_stream ON receipts (stream_shard, stream_position);
CREATE INDEX event_txn_ids_event ON event_txn_ids (user_id, device_id, room_id, event_id);
