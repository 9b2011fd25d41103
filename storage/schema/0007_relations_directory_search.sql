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

-- Each room's directory fields (current content of its directory state,
-- NULL when unset or redacted) and joined member count, kept by
-- write_directory_stats_txn (storage/stores/directory.py).
CREATE TABLE room_directory_stats (
    room_id TEXT PRIMARY KEY,
    joined_members INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    topic TEXT,
    canonical_alias TEXT,
    avatar_url TEXT,
    join_rule TEXT,
    history_visibility TEXT,
    guest_access TEXT,
    -- content.type of m.room.create.
    room_type TEXT
);
CREATE INDEX room_directory_stats_size ON room_directory_stats (joined_members DESC, room_id);

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

-- BEGIN BACKFILL
-- Index the events persisted before this migration with the rules of
-- storage/stores/relations.py and storage/stores/directory.py. Event JSON
-- that jsonb refuses (a \u0000 escape) is skipped rather than failing the
-- migration.
CREATE OR REPLACE FUNCTION pg_temp.estuary_jsonb(t TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE TEMPORARY TABLE estuary_backfill ON COMMIT DROP AS
    SELECT e.room_id, e.event_id, e.type, e.state_key, e.sender, e.depth, e.stream_position, e.origin_server_ts,
           e.redacted_by, pg_temp.estuary_jsonb(e.json) -> 'content' AS content
    FROM events e WHERE NOT e.rejected;

INSERT INTO event_relations (room_id, event_id, relates_to_id, relation_type, type, sender, depth, stream_position,
                             origin_server_ts, aggregation_key)
SELECT room_id, event_id, content #>> '{m.relates_to,event_id}', content #>> '{m.relates_to,rel_type}', type, sender,
       depth, stream_position, origin_server_ts,
       CASE WHEN content #>> '{m.relates_to,rel_type}' = 'm.annotation'
                 AND jsonb_typeof(content #> '{m.relates_to,key}') = 'string'
            THEN content #>> '{m.relates_to,key}' END
FROM estuary_backfill
WHERE redacted_by IS NULL AND type <> 'm.room.redaction'
  AND jsonb_typeof(content #> '{m.relates_to,event_id}') = 'string'
  AND jsonb_typeof(content #> '{m.relates_to,rel_type}') = 'string'
  AND content #>> '{m.relates_to,event_id}' <> '' AND content #>> '{m.relates_to,rel_type}' <> ''
ON CONFLICT DO NOTHING;

INSERT INTO event_search (room_id, event_id, key, vector, depth, stream_position, origin_server_ts)
SELECT room_id, event_id, 'content.' || field, to_tsvector('english'::regconfig, content ->> field), depth,
       stream_position, origin_server_ts
FROM (
    SELECT b.*, CASE type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END AS field
    FROM estuary_backfill b
    WHERE redacted_by IS NULL
      AND ((type = 'm.room.message' AND state_key IS NULL) OR type IN ('m.room.name', 'm.room.topic'))
) searchable
WHERE jsonb_typeof(content -> field) = 'string' AND content ->> field <> ''
ON CONFLICT DO NOTHING;

INSERT INTO room_directory_stats (room_id, joined_members, name, topic, canonical_alias, avatar_url, join_rule,
                                  history_visibility, guest_access, room_type)
SELECT r.room_id,
       (SELECT count(*) FROM room_memberships m WHERE m.room_id = r.room_id AND m.membership = 'join'),
       max(CASE WHEN b.type = 'm.room.name' AND b.redacted_by IS NULL AND jsonb_typeof(b.content -> 'name') = 'string'
                THEN b.content ->> 'name' END),
       max(CASE WHEN b.type = 'm.room.topic' AND b.redacted_by IS NULL AND jsonb_typeof(b.content -> 'topic') = 'string'
                THEN b.content ->> 'topic' END),
       max(CASE WHEN b.type = 'm.room.canonical_alias' AND b.redacted_by IS NULL
                     AND jsonb_typeof(b.content -> 'alias') = 'string' THEN b.content ->> 'alias' END),
       max(CASE WHEN b.type = 'm.room.avatar' AND b.redacted_by IS NULL AND jsonb_typeof(b.content -> 'url') = 'string'
                THEN b.content ->> 'url' END),
       max(CASE WHEN b.type = 'm.room.join_rules' AND jsonb_typeof(b.content -> 'join_rule') = 'string'
                THEN b.content ->> 'join_rule' END),
       max(CASE WHEN b.type = 'm.room.history_visibility' AND jsonb_typeof(b.content -> 'history_visibility') = 'string'
                THEN b.content ->> 'history_visibility' END),
       max(CASE WHEN b.type = 'm.room.guest_access' AND b.redacted_by IS NULL
                     AND jsonb_typeof(b.content -> 'guest_access') = 'string' THEN b.content ->> 'guest_access' END),
       max(CASE WHEN b.type = 'm.room.create' AND jsonb_typeof(b.content -> 'type') = 'string'
                THEN b.content ->> 'type' END)
FROM rooms r
LEFT JOIN current_state cs ON cs.room_id = r.room_id AND cs.state_key = ''
LEFT JOIN estuary_backfill b ON b.room_id = cs.room_id AND b.event_id = cs.event_id
GROUP BY r.room_id
ON CONFLICT DO NOTHING;
-- END BACKFILL
