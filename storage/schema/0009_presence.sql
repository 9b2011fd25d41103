-- Presence (issue 6, part C): each user's current presence, written by the
-- owner of the user's shard of the ``presence`` stream at a new position of
-- that shard on every change clients should hear of (DESIGN.md §3).
CREATE TABLE presence_state (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL
);
CREATE UNIQUE INDEX presence_state_stream ON presence_state (stream_shard, stream_position);
-- The writer reloads the users it must time out (not offline) at start.
CREATE INDEX presence_state_active ON presence_state (stream_shard) WHERE state <> 'offline';
