"""Synapse-compatible admin endpoints for users, their devices and the server version.

Thin servlets: authenticate a server admin, parse the query or body, call
:class:`homeserver.handlers.admin.AdminUsers`.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from homeserver.errors import invalid_param
from homeserver.handlers.admin import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    USER_ORDERS,
    USER_TYPES,
    UserQuery,
    parse_bool,
    parse_dir,
    parse_int,
)
from homeserver.handlers.auth import require_admin
from homeserver.http.server import JsonResource, query_args
from homeserver.rest.client._common import json_body, query_text, route

ADMIN_V1 = "/_synapse/admin/v1"
ADMIN_V2 = "/_synapse/admin/v2"
ADMIN_V3 = "/_synapse/admin/v3"


def server_version() -> str:
    """This server's version (the installed package's)."""
    try:
        return importlib.metadata.version("estuary-homeserver")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def register_server_version(resource: JsonResource) -> None:
    """``GET /_synapse/admin/v1/server_version``.

    Unauthenticated, as in Synapse (tools show it before logging in); it
    tells no more than the public ``/_matrix/federation/v1/version``.
    """

    async def get_version(request: Any) -> tuple[int, Any]:
        return 200, {"server_version": server_version()}

    route(resource, "GET", ADMIN_V1 + "/server_version", get_version, name="admin_server_version")


def parse_user_query(request: Any, version: int = 2) -> UserQuery:
    """The filters, order and page of ``GET /v2/users`` and ``/v3/users`` (``M_INVALID_PARAM`` for bad values).

    They differ only in ``deactivated``: v2's ``true`` includes deactivated
    users (default: left out); v3's is a filter (``true`` only them,
    ``false`` none of them, absent everyone).
    """
    deactivated = parse_bool(query_text(request, "deactivated"), "deactivated", None)
    if version == 2:
        deactivated = None if deactivated else False
    order_by = query_text(request, "order_by") or "name"
    if order_by not in USER_ORDERS:
        raise invalid_param(f"Unknown value for order_by: {order_by!r}")
    limit = parse_int(query_text(request, "limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    if limit == 0:
        raise invalid_param("Query parameter 'limit' must be positive")
    return UserQuery(
        start=parse_int(query_text(request, "from"), "from", 0),
        limit=limit,
        guests=bool(parse_bool(query_text(request, "guests"), "guests", True)),
        deactivated=deactivated,
        admins=parse_bool(query_text(request, "admins"), "admins", None),
        name=query_text(request, "name") or None,
        user_id=query_text(request, "user_id") or None,
        order_by=order_by,
        backwards=parse_dir(query_text(request, "dir")),
        not_user_types=parse_not_user_types(request),
    )


def parse_not_user_types(request: Any) -> tuple[str, ...]:
    """``not_user_type`` (repeatable): ``bot``, ``support`` or the empty string."""
    values = query_args(request, "not_user_type")
    for value in values:
        if value not in USER_TYPES and value != "":
            raise invalid_param(f"Unknown value for not_user_type: {value!r}")
    return tuple(values)


def register(resource: JsonResource, users: Any, authenticator: Any) -> None:
    """Mount the user administration endpoints (server admins only)."""
    register_server_version(resource)

    async def list_users(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.list_users(parse_user_query(request))

    async def list_users_v3(request: Any) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.list_users(parse_user_query(request, version=3))

    async def get_user(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.get_user(userId)

    async def put_user(request: Any, userId: str) -> tuple[int, Any]:
        requester = await require_admin(authenticator, request)
        return await users.put_user(requester, userId, json_body(request))

    async def deactivate(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.deactivate(userId, json_body(request, allow_empty=True))

    async def reset_password(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        await users.reset_password(userId, json_body(request))
        return 200, {}

    async def whois(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.whois(userId)

    async def get_admin(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.is_admin(userId)

    async def put_admin(request: Any, userId: str) -> tuple[int, Any]:
        requester = await require_admin(authenticator, request)
        await users.set_admin(requester, userId, json_body(request))
        return 200, {}

    async def list_devices(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.list_devices(userId)

    async def get_device(request: Any, userId: str, deviceId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.get_device(userId, deviceId)

    async def put_device(request: Any, userId: str, deviceId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        await users.update_device(userId, deviceId, json_body(request, allow_empty=True))
        return 200, {}

    async def delete_device(request: Any, userId: str, deviceId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        await users.delete_device(userId, deviceId)
        return 200, {}

    async def delete_devices(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        await users.delete_devices(userId, json_body(request))
        return 200, {}

    async def joined_rooms(request: Any, userId: str) -> tuple[int, Any]:
        await require_admin(authenticator, request)
        return 200, await users.joined_rooms(userId)

    route(resource, "GET", ADMIN_V2 + "/users", list_users, name="admin_list_users")
    route(resource, "GET", ADMIN_V3 + "/users", list_users_v3, name="admin_list_users_v3")
    route(resource, "GET", ADMIN_V2 + "/users/{userId}", get_user, name="admin_get_user")
    route(resource, "PUT", ADMIN_V2 + "/users/{userId}", put_user, name="admin_put_user")
    route(resource, "POST", ADMIN_V1 + "/deactivate/{userId}", deactivate, name="admin_deactivate")
    route(resource, "POST", ADMIN_V1 + "/reset_password/{userId}", reset_password, name="admin_reset_password")
    route(resource, "GET", ADMIN_V1 + "/whois/{userId}", whois, name="admin_whois")
    route(resource, "GET", ADMIN_V1 + "/users/{userId}/admin", get_admin, name="admin_get_admin")
    route(resource, "PUT", ADMIN_V1 + "/users/{userId}/admin", put_admin, name="admin_put_admin")
    route(resource, "GET", ADMIN_V2 + "/users/{userId}/devices", list_devices, name="admin_list_devices")
    route(resource, "GET", ADMIN_V2 + "/users/{userId}/devices/{deviceId}", get_device, name="admin_get_device")
    route(resource, "PUT", ADMIN_V2 + "/users/{userId}/devices/{deviceId}", put_device, name="admin_put_device")
    route(resource, "DELETE", ADMIN_V2 + "/users/{userId}/devices/{deviceId}", delete_device, name="admin_delete_device")
    route(resource, "POST", ADMIN_V2 + "/users/{userId}/delete_devices", delete_devices, name="admin_delete_devices")
    route(resource, "GET", ADMIN_V1 + "/users/{userId}/joined_rooms", joined_rooms, name="admin_joined_rooms")
