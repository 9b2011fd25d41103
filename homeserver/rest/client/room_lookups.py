"""Room lookup endpoints: timestamp_to_event and room summaries (client API v1).

Thin: authenticate, validate the query, call the :class:`RoomLookupHandler`.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import invalid_param, missing_param
from homeserver.http.server import JsonResource, access_token
from homeserver.rest.client._common import V1, query_text, route


def register(resource: JsonResource, lookups: Any, authenticator: Any) -> None:
    """Mount ``/v1/rooms/{roomId}/timestamp_to_event`` and ``/v1/room_summary/{roomIdOrAlias}``."""

    async def timestamp_to_event(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        raw_ts = query_text(request, "ts")
        direction = query_text(request, "dir")
        if raw_ts is None:
            raise missing_param("ts")
        if direction is None:
            raise missing_param("dir")
        if not raw_ts.isascii() or not raw_ts.lstrip("-").isdigit() or len(raw_ts) > 19:
            raise invalid_param("ts must be an integer")
        return 200, await lookups.timestamp_to_event(requester, roomId, int(raw_ts), direction)

    async def room_summary(request: Any, roomIdOrAlias: str) -> tuple[int, Any]:
        # Authentication is optional (spec: servers MAY serve public rooms'
        # summaries unauthenticated); a token that is sent must be valid.
        requester = None
        if access_token(request) is not None:
            requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await lookups.room_summary(requester, roomIdOrAlias)

    route(resource, "GET", [V1 + "/rooms/{roomId}/timestamp_to_event"], timestamp_to_event, name="room_timestamp_to_event")
    route(resource, "GET", [V1 + "/room_summary/{roomIdOrAlias}"], room_summary, name="room_summary")


def register_upgrade(resource: JsonResource, upgrader: Any, authenticator: Any) -> None:
    """Mount ``POST /rooms/{roomId}/upgrade`` (a ``RoomUpgrader``)."""
    from homeserver.rest.client._common import json_body, paths

    async def upgrade(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        return 200, await upgrader.upgrade(requester, roomId, json_body(request))

    route(resource, "POST", paths("/rooms/{roomId}/upgrade"), upgrade, name="room_upgrade")


def register_hierarchy(resource: JsonResource, hierarchy: Any, authenticator: Any) -> None:
    """Mount ``GET /v1/rooms/{roomId}/hierarchy`` (a ``SpaceHierarchyHandler``)."""
    from homeserver.http.server import query_int

    async def get_hierarchy(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        suggested = query_text(request, "suggested_only")
        if suggested not in (None, "true", "false"):
            raise invalid_param("suggested_only must be 'true' or 'false'")
        return 200, await hierarchy.get_hierarchy(
            requester, roomId, suggested_only=suggested == "true",
            max_depth=query_int(request, "max_depth", None), limit=query_int(request, "limit", None),
            from_token=query_text(request, "from"),
        )

    route(resource, "GET", [V1 + "/rooms/{roomId}/hierarchy"], get_hierarchy, name="room_hierarchy")
