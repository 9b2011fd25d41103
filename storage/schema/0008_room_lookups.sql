-- Room lookups (issue 6, part C): events of a room by their timestamp, for
-- GET /rooms/{roomId}/timestamp_to_event. Ties on origin_server_ts are
-- broken by stream position, so the scan order is total.
CREATE INDEX events_room_timestamp ON events (room_id, origin_server_ts, stream_position);
