"""Room endpoints: createRoom, membership, send, state, redact, reads.

Thin: authenticate, validate the request shape, call the room handler,
return ``(status, json)``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from homeserver.errors import bad_json, invalid_param
from homeserver.http.server import JsonResource, parse_json_object, query_arg, query_args, query_int
from homeserver.rest.client._common import paths


def _reason(body: dict[str, Any]) -> Optional[str]:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_json("'reason' must be a string")
    return reason


def _filter_arg(request: Any) -> Any:
    raw = query_arg(request, "filter")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise invalid_param("filter must be JSON")
    if not isinstance(value, dict):
        raise invalid_param("filter must be a JSON object")
    return value


def register(resource: JsonResource, rooms: Any, commands: Any, authenticator: Any) -> None:
    """Mount the room endpoints: reads through ``rooms`` (a ``RoomHandler``), writes through
    ``commands`` (a ``RoomCommands``: run on the owner of the room's shard)."""

    async def create_room(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = parse_json_object(request)
        return 200, await commands.create_room(requester, body)

    async def send(request: Any, roomId: str, eventType: str, txnId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request)
        created = await commands.send_event(requester, roomId, eventType, body, txnId)
        return 200, {"event_id": created["event_id"]}

    async def put_state(request: Any, roomId: str, eventType: str, stateKey: str = "") -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request)
        created = await commands.send_state(requester, roomId, eventType, stateKey, body)
        return 200, {"event_id": created["event_id"]}

    async def get_state_event(request: Any, roomId: str, eventType: str, stateKey: str = "") -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        fmt = query_arg(request, "format", "content")
        return 200, await rooms.get_state_event(requester, roomId, eventType, stateKey, fmt)

    async def get_state(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await rooms.get_state(requester, roomId)

    async def redact(request: Any, roomId: str, eventId: str, txnId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request, allow_empty=True)
        created = await commands.redact(requester, roomId, eventId, txnId, _reason(body))
        return 200, {"event_id": created["event_id"]}

    async def join(request: Any, roomIdOrAlias: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        servers = query_args(request, "server_name") + query_args(request, "via")
        room_id = await commands.join(requester, roomIdOrAlias, _reason(body), servers=servers)
        return 200, {"room_id": room_id}

    async def knock(request: Any, roomIdOrAlias: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request)
        body = parse_json_object(request, allow_empty=True)
        servers = query_args(request, "server_name") + query_args(request, "via")
        room_id = await commands.knock(requester, roomIdOrAlias, _reason(body), servers=servers)
        return 200, {"room_id": room_id}

    async def room_join(request: Any, roomId: str) -> tuple[int, Any]:
        return await join(request, roomId)

    async def leave(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request, allow_empty=True)
        await commands.leave(requester, roomId, _reason(body))
        return 200, {}

    def membership_action(action: str) -> Any:
        async def handler(request: Any, roomId: str) -> tuple[int, Any]:
            requester = await authenticator.get_user_by_req(request)
            body = parse_json_object(request)
            target = body.get("user_id")
            if not isinstance(target, str):
                raise bad_json("'user_id' must be a string")
            await commands.change_membership(requester, roomId, target, action, _reason(body))
            return 200, {}

        handler.__name__ = f"room_{action}"
        return handler

    async def forget(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        await rooms.forget(requester, roomId)
        return 200, {}

    async def joined_rooms(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, {"joined_rooms": await rooms.joined_rooms(requester)}

    async def members(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        membership = query_arg(request, "membership")
        not_membership = query_arg(request, "not_membership")
        for value in (membership, not_membership):
            if value is not None and value not in ("join", "invite", "knock", "leave", "ban"):
                raise invalid_param("Unknown membership")
        chunk = await rooms.get_members(requester, roomId, membership, not_membership, query_arg(request, "at"))
        return 200, {"chunk": chunk}

    async def joined_members(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, {"joined": await rooms.joined_members(requester, roomId)}

    async def get_event(request: Any, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await rooms.get_event(requester, roomId, eventId)

    async def messages(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await rooms.messages(
            requester, roomId, query_arg(request, "from"), query_arg(request, "to"),
            query_arg(request, "dir", "b"), query_int(request, "limit", 10, minimum=0, maximum=1000),
            _filter_arg(request),
        )

    async def context(request: Any, roomId: str, eventId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        return 200, await rooms.context(
            requester, roomId, eventId, query_int(request, "limit", 10, minimum=0, maximum=1000), _filter_arg(request)
        )

    resource.register("POST", paths("/createRoom"), (create_room), name="create_room")
    resource.register("PUT", paths("/rooms/{roomId}/send/{eventType}/{txnId}"), (send), name="room_send")
    resource.register("PUT", paths("/rooms/{roomId}/state/{eventType}/{stateKey}"), (put_state), name="room_state_put")
    resource.register("PUT", paths("/rooms/{roomId}/state/{eventType}/") + paths("/rooms/{roomId}/state/{eventType}"), (put_state), name="room_state_put")
    resource.register("GET", paths("/rooms/{roomId}/state/{eventType}/{stateKey}"), get_state_event, name="room_state_get")
    resource.register("GET", paths("/rooms/{roomId}/state/{eventType}/") + paths("/rooms/{roomId}/state/{eventType}"), get_state_event, name="room_state_get")
    resource.register("GET", paths("/rooms/{roomId}/state"), get_state, name="room_state_all")
    resource.register("PUT", paths("/rooms/{roomId}/redact/{eventId}/{txnId}"), (redact), name="room_redact")
    resource.register("POST", paths("/join/{roomIdOrAlias}"), (join), name="join")
    resource.register("POST", paths("/rooms/{roomId}/join"), (room_join), name="room_join")
    resource.register("POST", paths("/knock/{roomIdOrAlias}"), (knock), name="knock")
    resource.register("POST", paths("/rooms/{roomId}/leave"), (leave), name="room_leave")
    for action in ("invite", "kick", "ban", "unban"):
        resource.register("POST", paths(f"/rooms/{{roomId}}/{action}"), (membership_action(action)), name=f"room_{action}")
    resource.register("POST", paths("/rooms/{roomId}/forget"), forget, name="room_forget")
    resource.register("GET", paths("/joined_rooms"), joined_rooms, name="joined_rooms")
    resource.register("GET", paths("/rooms/{roomId}/members"), members, name="room_members")
    resource.register("GET", paths("/rooms/{roomId}/joined_members"), joined_members, name="room_joined_members")
    resource.register("GET", paths("/rooms/{roomId}/event/{eventId}"), get_event, name="room_event")
    resource.register("GET", paths("/rooms/{roomId}/messages"), messages, name="room_messages")
    resource.register("GET", paths("/rooms/{roomId}/context/{eventId}"), context, name="room_context")
