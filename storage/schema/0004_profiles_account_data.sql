-- Profiles, account data (global, per room, tags) and filters (issue 5).

CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value JSONB NOT NULL,
    -- Size of the field's JSON encoding, to enforce the 64 KiB total.
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- Positions of the account_data stream. One global sequence for now; the
-- per-shard model replaces it with one sequence per user shard
-- (account_data_stream_seq_<shard>), see storage/stores/account_data.py.
CREATE SEQUENCE account_data_stream_seq;

-- Global account data has room_id = ''. Room tags are the room account data
-- of type m.tag, so /sync reads them like any other room account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content JSONB NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json JSONB NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
