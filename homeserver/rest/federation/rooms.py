"""The authenticated server-server room endpoints (spec: server-server-api; data/api/server-server).

Thin HTTP edge over :class:`homeserver.federation.rooms.FederationRooms`:
every handler is wrapped by ``FederationAuthenticator.wrap`` (X-Matrix),
parses its arguments and returns the logic's JSON. ``send_join`` /
``send_leave`` are served in both the v1 (``[200, body]``) and v2 shapes.
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import Codes, MatrixError, bad_json
from homeserver.http.server import JsonResource, parse_json_object, parse_json_value, query_arg, query_args, query_int

PREFIX = "/_matrix/federation"
#: 50 PDUs and 100 EDUs of at most 64 KiB each.
MAX_TRANSACTION_BYTES = 150 * 65536


def register_federation_rooms(resource: JsonResource, rooms: Any, authenticator: Any) -> None:
    """Mount transactions, room reads, and make/send join and leave."""
    wrap = authenticator.wrap

    async def send_transaction(request: Any, origin: str, txnId: str) -> tuple[int, Any]:
        return 200, await rooms.on_transaction(origin, txnId, parse_json_object(request))

    async def get_event(request: Any, origin: str, eventId: str) -> tuple[int, Any]:
        return 200, await rooms.get_event(origin, eventId)

    def _event_id(request: Any) -> str:
        event_id = query_arg(request, "event_id")
        if not event_id:
            raise bad_json("event_id is required")
        return event_id

    async def state_ids(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        return 200, await rooms.get_state_ids(origin, roomId, _event_id(request))

    async def state(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        return 200, await rooms.get_state(origin, roomId, _event_id(request))

    async def event_auth(request: Any, origin: str, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, await rooms.get_event_auth(origin, roomId, eventId)

    async def backfill(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        limit = query_int(request, "limit", 10, minimum=0)
        return 200, await rooms.backfill(origin, roomId, query_args(request, "v"), limit)

    async def missing_events(request: Any, origin: str, roomId: str) -> tuple[int, Any]:
        return 200, await rooms.get_missing_events(origin, roomId, parse_json_value(request))

    async def make_join(request: Any, origin: str, roomId: str, userId: str) -> tuple[int, Any]:
        versions = query_args(request, "ver")
        return 200, await rooms.make_membership(origin, roomId, userId, "join", versions or None)

    async def make_knock(request: Any, origin: str, roomId: str, userId: str) -> tuple[int, Any]:
        versions = query_args(request, "ver")
        if not versions:
            raise MatrixError(400, Codes.MISSING_PARAM, "ver is required")
        return 200, await rooms.make_membership(origin, roomId, userId, "knock", versions)

    async def send_knock(request: Any, origin: str, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, await rooms.send_membership(origin, roomId, eventId, parse_json_value(request), "knock")

    async def make_leave(request: Any, origin: str, roomId: str, userId: str) -> tuple[int, Any]:
        return 200, await rooms.make_membership(origin, roomId, userId, "leave", None)

    def send_membership(membership: str, v1: bool) -> Any:
        async def handler(request: Any, origin: str, roomId: str, eventId: str) -> tuple[int, Any]:
            body = await rooms.send_membership(origin, roomId, eventId, parse_json_value(request), membership)
            return 200, ([200, body] if v1 else body)

        return handler

    resource.register("PUT", PREFIX + "/v1/send/{txnId}", wrap(send_transaction), name="federation_send",
                      max_body=MAX_TRANSACTION_BYTES)
    resource.register("GET", PREFIX + "/v1/event/{eventId}", wrap(get_event), name="federation_event")
    resource.register("GET", PREFIX + "/v1/state_ids/{roomId}", wrap(state_ids), name="federation_state_ids")
    resource.register("GET", PREFIX + "/v1/state/{roomId}", wrap(state), name="federation_state")
    resource.register("GET", PREFIX + "/v1/event_auth/{roomId}/{eventId}", wrap(event_auth), name="federation_event_auth")
    resource.register("GET", PREFIX + "/v1/backfill/{roomId}", wrap(backfill), name="federation_backfill")
    resource.register("POST", PREFIX + "/v1/get_missing_events/{roomId}", wrap(missing_events), name="federation_missing")
    resource.register("GET", PREFIX + "/v1/make_join/{roomId}/{userId}", wrap(make_join), name="federation_make_join")
    resource.register("GET", PREFIX + "/v1/make_leave/{roomId}/{userId}", wrap(make_leave), name="federation_make_leave")
    resource.register("GET", PREFIX + "/v1/make_knock/{roomId}/{userId}", wrap(make_knock), name="federation_make_knock")
    resource.register("PUT", PREFIX + "/v1/send_knock/{roomId}/{eventId}", wrap(send_knock), name="federation_send_knock")
    async def query_directory(request: Any, origin: str) -> tuple[int, Any]:
        alias = query_arg(request, "room_alias")
        if not alias:
            raise bad_json("room_alias is required")
        return 200, await rooms.query_directory(origin, alias)

    async def query_profile(request: Any, origin: str) -> tuple[int, Any]:
        user_id = query_arg(request, "user_id")
        if not user_id:
            raise bad_json("user_id is required")
        return 200, await rooms.query_profile(origin, user_id, query_arg(request, "field"))

    resource.register("GET", PREFIX + "/v1/query/directory", wrap(query_directory), name="federation_query_directory")
    resource.register("GET", PREFIX + "/v1/query/profile", wrap(query_profile), name="federation_query_profile")

    async def invite(request: Any, origin: str, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, await rooms.on_invite(origin, roomId, eventId, parse_json_value(request))

    async def invite_v1(request: Any, origin: str, roomId: str, eventId: str) -> tuple[int, Any]:
        return 200, [200, await rooms.on_invite_v1(origin, roomId, eventId, parse_json_value(request))]

    resource.register("PUT", PREFIX + "/v2/invite/{roomId}/{eventId}", wrap(invite), name="federation_invite_v2")
    resource.register("PUT", PREFIX + "/v1/invite/{roomId}/{eventId}", wrap(invite_v1), name="federation_invite_v1")
    for version, v1 in (("v1", True), ("v2", False)):
        resource.register("PUT", f"{PREFIX}/{version}/send_join/{{roomId}}/{{eventId}}", wrap(send_membership("join", v1)),
                          name=f"federation_send_join_{version}")
        resource.register("PUT", f"{PREFIX}/{version}/send_leave/{{roomId}}/{{eventId}}", wrap(send_membership("leave", v1)),
                          name=f"federation_send_leave_{version}")


def register_federation_keys(resource: JsonResource, keys: Any, authenticator: Any) -> None:
    """Mount ``/user/devices/{userId}``, ``/user/keys/query`` and ``/user/keys/claim``
    (``keys``: a ``homeserver.handlers.e2e_keys.E2EKeysHandler``)."""
    wrap = authenticator.wrap

    async def user_devices(request: Any, origin: str, userId: str) -> tuple[int, Any]:
        return 200, await keys.federation_devices(origin, userId)

    async def keys_query(request: Any, origin: str) -> tuple[int, Any]:
        return 200, await keys.federation_query(origin, parse_json_object(request))

    async def keys_claim(request: Any, origin: str) -> tuple[int, Any]:
        return 200, await keys.federation_claim(origin, parse_json_object(request))

    resource.register("GET", PREFIX + "/v1/user/devices/{userId}", wrap(user_devices), name="fed_user_devices")
    resource.register("POST", PREFIX + "/v1/user/keys/query", wrap(keys_query), name="fed_user_keys_query")
    resource.register("POST", PREFIX + "/v1/user/keys/claim", wrap(keys_claim), name="fed_user_keys_claim")
