-- Streams (DESIGN.md section 3). Each stream is split into a fixed number of
-- shards when the install is created; each shard draws its positions from its
-- own sequence, stream_<stream>_<shard>_seq, created by
-- storage.streams.ensure_stream_shards. The shard count is recorded here so
-- that starting with a different count in config (which would silently move
-- rooms and users to other shards) is detected and refused.
CREATE TABLE stream_shards (
    stream TEXT PRIMARY KEY CHECK (stream ~ '^[a-z][a-z0-9_]*$'),
    shard_count INTEGER NOT NULL CHECK (shard_count > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
