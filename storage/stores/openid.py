"""OpenID tokens: issued to local users, exchanged by third parties for the user ID.

Only the SHA-256 of a token is stored (a leaked table gives no usable
token); lookups are by that hash.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer


class OpenIdTokenStore:
    def __init__(self, database: Any) -> None:
        self._db = database

    def add_token(self, token_hash: str, user_id: str, expires_ts: int, now_ms: int) -> "defer.Deferred[None]":
        """Record a new token; expired ones are swept in the same transaction."""

        def txn_fn(txn: Any) -> None:
            txn.execute("DELETE FROM openid_tokens WHERE expires_ts <= %s", (now_ms,))
            txn.execute("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (%s, %s, %s)",
                        (token_hash, user_id, expires_ts))

        return self._db.run_interaction("add_openid_token", txn_fn)

    def get_token(self, token_hash: str) -> "defer.Deferred[Optional[tuple[str, int]]]":
        """``(user_id, expires_ts)`` of a token by its hash, or None."""

        def txn_fn(txn: Any) -> Optional[tuple[str, int]]:
            txn.execute("SELECT user_id, expires_ts FROM openid_tokens WHERE token_hash = %s", (token_hash,))
            row = txn.fetchone()
            return (row[0], row[1]) if row else None

        return self._db.run_interaction("get_openid_token", txn_fn)
