"""Deprecated sync endpoints: GET /initialSync, GET /events, GET /rooms/{roomId}/initialSync."""

from __future__ import annotations

from typing import Any

from homeserver.errors import invalid_param
from homeserver.http.server import JsonResource, query_int
from homeserver.rest.client._common import paths, query_text, route


def register_legacy(resource: JsonResource, legacy: Any, authenticator: Any) -> None:
    """Mount the legacy sync endpoints; ``legacy`` is a LegacySyncHandler."""

    async def initial_sync(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        archived = query_text(request, "archived") or "false"
        if archived not in ("true", "false"):
            raise invalid_param("archived must be true or false")
        return 200, await legacy.initial_sync(requester, query_int(request, "limit", None, minimum=0), archived == "true")

    async def events(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await legacy.events(requester, query_text(request, "from"), query_int(request, "timeout", 0, minimum=0))

    async def room_initial_sync(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await legacy.room_initial_sync(requester, roomId, query_int(request, "limit", None, minimum=0))

    route(resource, "GET", paths("/initialSync"), initial_sync, name="legacy_initial_sync")
    route(resource, "GET", paths("/events"), events, name="legacy_events")
    route(resource, "GET", paths("/rooms/{roomId}/initialSync"), room_initial_sync, name="room_initial_sync")
