-- OpenID tokens (client-server "OpenID", server-server GET /openid/userinfo):
-- short-lived tokens a user hands to a third party, which asks us who they
-- belong to. Only the SHA-256 of each token is kept.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
