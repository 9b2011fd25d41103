-- Server notices: each local user's notices room (client-server API,
-- "Server Notices"). One row per user, created on the first notice.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX server_notice_rooms_room ON server_notice_rooms (room_id);
