"""Queries to other servers on behalf of local clients: remote profiles and room aliases.

``GET /_matrix/federation/v1/query/profile`` and ``/query/directory``
(server-server API, "Querying for information"). The answers are checked for
shape before use; what the remote refuses comes back to the client with the
remote's status and ``errcode`` when it is a 4xx, and an unreachable or
failing server is a 502 (as Synapse answers), never a 500.

Answers are cached briefly (``cache_ms``): clients fetch the same remote
profile for every member list render, and a room alias rarely moves.
"""

from __future__ import annotations

import logging
from typing import Any, Optional
from urllib.parse import quote

from homeserver.core import ids
from homeserver.errors import Codes, MatrixError, invalid_param, not_found
from homeserver.federation.errors import FederationError, HttpResponseError

logger = logging.getLogger(__name__)


def _server_of(identifier: str) -> str:
    return identifier.split(":", 1)[1] if ":" in identifier else ""


class RemoteQueries:
    """Profile and alias look-ups on other servers, through the signed federation client."""

    def __init__(self, clock: Any, client: Any, cache_ms: int = 60_000, cache_size: int = 4096) -> None:
        self._clock = clock
        self._client = client
        self._cache_ms = cache_ms
        self._cache_size = cache_size
        self._cache: dict[tuple[str, str, str], tuple[int, Any]] = {}

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _cached(self, key: tuple[str, str, str]) -> Optional[Any]:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[0] <= self._now_ms():
            del self._cache[key]
            return None
        return hit[1]

    def _remember(self, key: tuple[str, str, str], value: Any) -> None:
        if len(self._cache) >= self._cache_size:
            # Drop the oldest entries (dicts keep insertion order).
            for old in list(self._cache)[: self._cache_size // 4 or 1]:
                del self._cache[old]
        self._cache[key] = (self._now_ms() + self._cache_ms, value)

    async def _query(self, destination: str, kind: str, args: dict[str, str]) -> Any:
        try:
            return await self._client.get_json(destination, f"/_matrix/federation/v1/query/{quote(kind)}", args=args)
        except HttpResponseError as e:
            if 400 <= e.code < 500 and e.code != 429:
                errcode = e.errcode or (Codes.NOT_FOUND if e.code == 404 else Codes.UNKNOWN)
                message = e.body.get("error") if isinstance(e.body, dict) and isinstance(e.body.get("error"), str) else str(e)
                raise MatrixError(e.code, errcode, message)
            raise MatrixError(502, Codes.UNKNOWN, f"{destination} failed to answer the {kind} query")
        except FederationError as e:
            logger.info("%s query to %s failed: %s", kind, destination, e)
            raise MatrixError(502, Codes.UNKNOWN, f"Failed to reach {destination}")

    async def profile(self, user_id: str, field: Optional[str] = None) -> dict[str, Any]:
        """A remote user's profile (or one field of it: ``{field: value}``, 404 if unset)."""
        try:
            ids.UserID.parse(user_id)
        except ValueError:
            raise invalid_param("Invalid user ID")
        key = ("profile", user_id, field or "")
        cached = self._cached(key)
        if cached is not None:
            return dict(cached)
        args = {"user_id": user_id}
        if field is not None:
            args["field"] = field
        answer = await self._query(_server_of(user_id), "profile", args)
        if not isinstance(answer, dict):
            raise MatrixError(502, Codes.UNKNOWN, "Malformed profile from the remote server")
        profile = {k: v for k, v in answer.items() if v is not None}
        if field is not None:
            if profile.get(field) is None:
                raise not_found("Profile field not set")
            profile = {field: profile[field]}
        self._remember(key, profile)
        return dict(profile)

    async def alias(self, alias: str) -> tuple[str, list[str]]:
        """The room ID of a remote alias and the servers to join it through (404 if unknown)."""
        key = ("alias", alias, "")
        cached = self._cached(key)
        if cached is not None:
            return cached[0], list(cached[1])
        answer = await self._query(_server_of(alias), "directory", {"room_alias": alias})
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, Codes.UNKNOWN, "Malformed alias answer from the remote server")
        servers = [s for s in servers if isinstance(s, str) and s] if isinstance(servers, list) else []
        self._remember(key, (room_id, tuple(servers)))
        return room_id, servers
