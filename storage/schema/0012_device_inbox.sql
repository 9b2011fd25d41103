-- Send-to-device messaging (client-server API, "Send-to-Device messaging"):
-- messages waiting for a local device, written by the owner of the
-- recipient's shard of the ``to_device`` stream at a position of that shard
-- (DESIGN.md §3), deleted once the device's /sync acknowledges them.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_shard INTEGER NOT NULL,
    stream_position BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX device_inbox_device ON device_inbox (user_id, device_id, stream_position);
CREATE INDEX device_inbox_stream ON device_inbox (stream_shard, stream_position);
-- Transactions already delivered per recipient user: a retried PUT with the
-- same transaction ID from the same device is not delivered twice, even
-- after the first delivery was acknowledged and deleted.
CREATE TABLE device_inbox_txns (
    sender TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (sender, sender_device, txn_id, user_id)
);
