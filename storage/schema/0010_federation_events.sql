-- Federation part 2 (issue 8): received events that must never reach clients.
--
-- A received PDU that fails its auth checks is *rejected*; one that passes
-- against the state before it but not against the room's current state is
-- *soft-failed*. Neither gets a position on the events stream (so neither
-- appears in /sync, /messages or any other client view) nor becomes a
-- forward extremity; they are kept so that a retransmission is answered
-- without work, and so that later events citing a rejected event as an
-- auth event are rejected in turn.
CREATE TABLE federation_rejected_events (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rejected', 'soft_failed')),
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,
    json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Outliers: events we hold without their place in the room's DAG, such as
-- the room state and auth chain a resident server returns from send_join.
-- They have no stream position (clients never see them in a timeline) but
-- are found by ID wherever state and auth events are read
-- (EventStore.get_events falls back to this table; such rows carry
-- stream_shard -1).
CREATE TABLE federation_outliers (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
