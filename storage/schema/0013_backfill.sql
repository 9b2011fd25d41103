-- Backfilled history (events fetched from other servers with GET /backfill)
-- takes negative stream positions -nextval(backfill_stream_seq) on shard 0:
-- it sorts topologically by depth, and never appears in /sync as new.
CREATE SEQUENCE backfill_stream_seq;
