-- Accounts, devices and the tokens that authenticate them (issue 5).
-- Every table is keyed or filtered by user_id, so it can be distributed by
-- user with Citus. Secrets are stored only as SHA-256 digests.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    -- lower(user_id): logins match localparts case-insensitively.
    user_id_lower TEXT NOT NULL,
    -- bcrypt hash; NULL means password login is impossible (guests, erased).
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    user_type TEXT,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    erased BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX users_user_id_lower ON users (user_id_lower);

-- Numeric localparts of guest accounts.
CREATE SEQUENCE guest_localpart_seq;

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE refresh_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT,
    -- Set when this token was exchanged at /refresh: the token issued in its place.
    next_token_id BIGINT,
    -- Set once the successor was used: presenting this token again is reuse.
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_user_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_id);

CREATE TABLE access_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    valid_until_ms BIGINT,
    -- The refresh token issued together with this access token, if any.
    refresh_token_id BIGINT,
    -- Whether the token has authenticated a request yet (ends the grace
    -- period of the refresh token it replaced).
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_user_device ON access_tokens (user_id, device_id);

-- Single-use tokens for m.login.token (POST /login/get_token).
CREATE TABLE login_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_expiry ON login_tokens (expiry_ts);
