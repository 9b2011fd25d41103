"""Server-server directory-like endpoints: ``/publicRooms``, ``/hierarchy``, ``/timestamp_to_event``
and ``/openid/userinfo`` (spec: data/api/server-server public_rooms.yaml, space_hierarchy.yaml,
events.yaml, openid.yaml).

Thin edge over :class:`homeserver.federation.rooms.FederationRooms`. Every
endpoint but ``/openid/userinfo`` (whose credential is the OpenID token)
requires X-Matrix authentication.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, parse_json_object, query_arg, query_int

PREFIX = "/_matrix/federation"


def _query_bool(request: Any, name: str) -> bool:
    raw = query_arg(request, name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be 'true' or 'false'")
    return raw == "true"


def register_federation_directory(resource: JsonResource, rooms: Any, authenticator: Any) -> None:
    """Mount the endpoints above on ``resource``."""
    wrap = authenticator.wrap

    async def get_public_rooms(request: Any, origin: str) -> tuple[int, Any]:
        return 200, await rooms.get_public_rooms(
            origin, query_int(request, "limit", None, minimum=0), query_arg(request, "since"), None,
            _query_bool(request, "include_all_networks"), query_arg(request, "third_party_instance_id"),
        )

    async def post_public_rooms(request: Any, origin: str) -> tuple[int, Any]:
        body = parse_json_object(request, allow_empty=True)
        return 200, await rooms.get_public_rooms(
            origin, body.get("limit"), body.get("since"), body.get("filter"), body.get("include_all_networks", False),
            body.get("third_party_instance_id"),
        )

    async def timestamp_to_event(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        ts = query_int(request, "ts", None, minimum=0)
        direction = query_arg(request, "dir")
        if ts is None or direction is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "ts and dir are required")
        return 200, await rooms.timestamp_to_event(origin, roomId, ts, direction)

    async def openid_userinfo(request: Any) -> tuple[int, Any]:
        return 200, await rooms.openid_userinfo(query_arg(request, "access_token"))

    async def hierarchy(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        return 200, await rooms.get_hierarchy(origin, roomId, _query_bool(request, "suggested_only"))

    resource.register("GET", PREFIX + "/v1/hierarchy/{roomId}", wrap(hierarchy), name="federation_hierarchy")
    resource.register("GET", PREFIX + "/v1/publicRooms", wrap(get_public_rooms), name="federation_public_rooms")
    resource.register("POST", PREFIX + "/v1/publicRooms", wrap(post_public_rooms), name="federation_public_rooms_filtered")
    resource.register("GET", PREFIX + "/v1/timestamp_to_event/{roomId}", wrap(timestamp_to_event),
                      name="federation_timestamp_to_event")
    resource.register("GET", PREFIX + "/v1/openid/userinfo", openid_userinfo, name="federation_openid_userinfo")
