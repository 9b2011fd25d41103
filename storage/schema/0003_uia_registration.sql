-- User-interactive auth sessions, registration tokens and shared-secret
-- registration nonces (issue 5).

CREATE TABLE ui_auth_sessions (
    session_id TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    -- The operation the session authorises ("register", "delete_devices"...)
    -- and, for authenticated operations, whose account it is.
    operation TEXT NOT NULL,
    user_id TEXT,
    -- Parameters of the first request, so later requests cannot change them.
    params JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Registration token reserved by this session (released on expiry).
    registration_token TEXT
);
CREATE INDEX ui_auth_sessions_created ON ui_auth_sessions (created_ts);

CREATE TABLE ui_auth_session_stages (
    session_id TEXT NOT NULL REFERENCES ui_auth_sessions (session_id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    -- What the stage proved, e.g. the user id a password matched.
    result JSONB NOT NULL,
    PRIMARY KEY (session_id, stage)
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

CREATE TABLE registration_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
CREATE INDEX registration_nonces_created ON registration_nonces (created_ts);
