"""OpenID tokens (client-server "OpenID"; server-server "OpenID").

A local user asks for a token (``POST /user/{userId}/openid/request_token``)
and hands it to a third party, which exchanges it with this server
(``GET /_matrix/federation/v1/openid/userinfo``) for the user ID. Tokens are
random (256 bits), expire after :data:`TOKEN_LIFETIME_MS`, and are stored
as their SHA-256: the lookup is by hash, so no secret is compared here.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from homeserver.errors import Codes, MatrixError, forbidden

#: How long an OpenID token is valid (what Synapse issues by default).
TOKEN_LIFETIME_MS = 3600 * 1000


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class OpenIdHandler:
    """Issues and checks OpenID tokens; ``store`` is a ``storage.stores.openid.OpenIdTokenStore``."""

    def __init__(self, clock: Any, server_name: str, store: Any, lifetime_ms: int = TOKEN_LIFETIME_MS) -> None:
        self._clock = clock
        self.server_name = server_name
        self._store = store
        self._lifetime_ms = lifetime_ms

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def request_token(self, requester: Any, user_id: str) -> dict[str, Any]:
        """A new token for the requester (403 when asking for someone else's)."""
        if requester.user_id != user_id:
            raise forbidden("You may only request OpenID tokens for yourself")
        if getattr(requester, "is_guest", False):
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests cannot request OpenID tokens")
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        await self._store.add_token(token_hash(token), user_id, now + self._lifetime_ms, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": self._lifetime_ms // 1000,
        }

    async def userinfo(self, token: Any) -> dict[str, Any]:
        """``{"sub": user_id}`` for a valid, unexpired token; 401 ``M_UNKNOWN_TOKEN`` otherwise."""
        if not isinstance(token, str) or not token:
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token unknown or expired")
        found = await self._store.get_token(token_hash(token))
        if found is None or found[1] <= self._now_ms():
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token unknown or expired")
        return {"sub": found[0]}
