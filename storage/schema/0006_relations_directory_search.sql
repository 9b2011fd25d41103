-- Relations, server-side search, room directory and reports (issue 6, part B).
--
-- event_relations and event_search are indexes over events, written in the
-- transaction that persists each event (storage/stores/relations.py,
-- write_event_indexes_txn) and cleared of an event when it is redacted.
-- Every room-scoped table carries room_id first (DESIGN.md §6).

-- One row per event carrying a valid content.m.relates_to (rel_type and
-- event_id strings), with the event's place in the room's topological order.
CREATE TABLE event_relations (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    relates_to_id TEXT NOT NULL,
    relation_type TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    stream_position BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- content.m.relates_to.key of m.annotation relations.
    aggregation_key TEXT,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX event_relations_parent ON event_relations (room_id, relates_to_id, depth, stream_position);
CREATE INDEX event_relations_type ON event_relations (room_id, relation_type, stream_position);

-- Searchable text of m.room.message (content.body), m.room.name
-- (content.name) and m.room.topic (content.topic) events.
CREATE TABLE event_search (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- 'content.body', 'content.name' or 'content.topic' (the search API's keys).
    key TEXT NOT NULL,
    vector TSVECTOR NOT NULL,
    depth BIGINT NOT NULL,
    stream_position BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_recent ON event_search (room_id, stream_position);

-- Reports of events and rooms (POST /rooms/{roomId}/report[/{eventId}]).
CREATE TABLE room_reports (
    room_id TEXT NOT NULL,
    report_id BIGSERIAL NOT NULL,
    event_id TEXT,
    reporter TEXT NOT NULL,
    reason TEXT,
    score INTEGER,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, report_id)
);

-- Reports of users (POST /users/{userId}/report).
CREATE TABLE user_reports (
    user_id TEXT NOT NULL,
    report_id BIGSERIAL NOT NULL,
    reporter TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, report_id)
);
