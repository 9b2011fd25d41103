"""Admin management of registration tokens (Synapse's admin API shape)."""

from __future__ import annotations

import re
import secrets
import string
from typing import Any, Optional

from homeserver.core.accounts import TokenExists
from homeserver.errors import invalid_param, not_found

_TOKEN = re.compile(r"[A-Za-z0-9._~\-]{1,64}\Z")
_ALPHABET = string.ascii_letters + string.digits + "._~-"


def token_json(token: Any) -> dict[str, Any]:
    """A token as the admin API shows it."""
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


#: Column bounds: ``uses_allowed`` is an INTEGER, ``expiry_time`` a BIGINT.
_MAXIMA = {"uses_allowed": 2**31 - 1, "expiry_time": 2**63 - 1}


def _optional_int(body: dict[str, Any], key: str) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAXIMA[key]:
        raise invalid_param(f"'{key}' must be a non-negative integer (at most {_MAXIMA[key]}) or null")
    return value


class RegistrationTokenAdmin:
    """List, create, read, update and delete registration tokens."""

    def __init__(self, clock: Any, store: Any) -> None:
        self._clock = clock
        self._store = store

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def list(self, valid: Optional[bool]) -> dict[str, Any]:
        """Every token, or only the (in)valid ones."""
        tokens = await self._store.list_registration_tokens()
        now = self._now_ms()
        if valid is not None:
            tokens = [t for t in tokens if t.is_valid(now) == valid]
        return {"registration_tokens": [token_json(t) for t in tokens]}

    async def get(self, token: str) -> dict[str, Any]:
        """One token, 404 if unknown."""
        found = await self._store.get_registration_token(token)
        if found is None:
            raise not_found("No such registration token")
        return token_json(found)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST .../registration_tokens/new``."""
        uses_allowed = _optional_int(body, "uses_allowed")
        expiry_time = _optional_int(body, "expiry_time")
        if expiry_time is not None and expiry_time < self._now_ms():
            raise invalid_param("'expiry_time' must not be in the past")
        token = body.get("token")
        if token is not None:
            if not isinstance(token, str) or not _TOKEN.match(token):
                raise invalid_param("'token' must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'")
        else:
            length = body.get("length", 16)
            if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 64:
                raise invalid_param("'length' must be an integer between 1 and 64")
            token = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        try:
            created = await self._store.create_registration_token(token, uses_allowed, expiry_time)
        except TokenExists:
            raise invalid_param(f"Token already exists: {token}")
        return token_json(created)

    async def update(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT .../registration_tokens/{token}``."""
        changes: dict[str, Any] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _optional_int(body, "uses_allowed")
        if "expiry_time" in body:
            expiry = _optional_int(body, "expiry_time")
            if expiry is not None and expiry < self._now_ms():
                raise invalid_param("'expiry_time' must not be in the past")
            changes["expiry_time"] = expiry
        updated = await self._store.update_registration_token(token, changes)
        if updated is None:
            raise not_found("No such registration token")
        return token_json(updated)

    async def delete(self, token: str) -> dict[str, Any]:
        """``DELETE .../registration_tokens/{token}``."""
        if not await self._store.delete_registration_token(token):
            raise not_found("No such registration token")
        return {}
