"""Synapse-compatible admin endpoints for rooms (list, details, members, state) and event reports.

Thin servlets: authenticate a server admin, parse the query, call
:class:`homeserver.handlers.admin.AdminRooms`.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import invalid_param
from homeserver.handlers.admin import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ROOM_ORDERS,
    RoomQuery,
    parse_bool,
    parse_dir,
    parse_int,
)
from homeserver.handlers.auth import require_admin
from homeserver.http.server import JsonResource
from homeserver.rest.client._common import query_text, route

ADMIN_V1 = "/_synapse/admin/v1"


def parse_room_query(request: Any) -> RoomQuery:
    """The search, order and page of ``GET /v1/rooms`` (``M_INVALID_PARAM`` for bad values)."""
    order_by = query_text(request, "order_by") or "name"
    if order_by not in ROOM_ORDERS:
        raise invalid_param(f"Unknown value for order_by: {order_by!r}")
    limit = parse_int(query_text(request, "limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    if limit == 0:
        raise invalid_param("Query parameter 'limit' must be positive")
    return RoomQuery(
        start=parse_int(query_text(request, "from"), "from", 0),
        limit=limit,
        order_by=order_by,
        backwards=parse_dir(query_text(request, "dir")),
        search_term=query_text(request, "search_term") or None,
        empty_rooms=parse_bool(query_text(request, "empty_rooms"), "empty_rooms", None),
    )


def register(resource: JsonResource, rooms: Any, authenticator: Any) -> None:
    """Mount the room administration endpoints (server admins only)."""

    async def list_rooms(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await rooms.list_rooms(parse_room_query(request))

    async def get_room(request: Any, roomId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await rooms.get_room(roomId)

    async def members(request: Any, roomId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await rooms.members(roomId)

    async def state(request: Any, roomId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await rooms.state(roomId)

    async def list_reports(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        limit = parse_int(query_text(request, "limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
        if limit == 0:
            raise invalid_param("Query parameter 'limit' must be positive")
        # Synapse lists the newest reports first unless dir=f.
        direction = query_text(request, "dir")
        backwards = True if direction is None else parse_dir(direction)
        return 200, await rooms.list_event_reports(
            parse_int(query_text(request, "from"), "from", 0), limit, backwards,
            query_text(request, "user_id") or None, query_text(request, "room_id") or None,
        )

    async def get_report(request: Any, reportId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await rooms.get_event_report(reportId)

    async def delete_report(request: Any, reportId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        await rooms.delete_event_report(reportId)
        return 200, {}

    route(resource, "GET", ADMIN_V1 + "/event_reports", list_reports, name="admin_event_reports")
    route(resource, "GET", ADMIN_V1 + "/event_reports/{reportId}", get_report, name="admin_event_report")
    route(resource, "DELETE", ADMIN_V1 + "/event_reports/{reportId}", delete_report, name="admin_event_report_delete")
    route(resource, "GET", ADMIN_V1 + "/rooms", list_rooms, name="admin_list_rooms")
    route(resource, "GET", ADMIN_V1 + "/rooms/{roomId}", get_room, name="admin_get_room")
    route(resource, "GET", ADMIN_V1 + "/rooms/{roomId}/members", members, name="admin_room_members")
    route(resource, "GET", ADMIN_V1 + "/rooms/{roomId}/state", state, name="admin_room_state")
