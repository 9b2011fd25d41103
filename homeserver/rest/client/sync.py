"""/sync, typing, receipts and read markers."""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import bad_json, invalid_param
from homeserver.http.server import JsonResource, parse_json_object, query_arg, query_int
from homeserver.rest.client._common import paths

logger = logging.getLogger(__name__)


def register_sync(resource: JsonResource, sync: Any, authenticator: Any, presence: Any = None) -> None:
    """Mount GET /sync (``presence``: a ``PresenceCommands`` told of each sync's ``set_presence``)."""

    async def get_sync(request: Any) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        full_state = query_arg(request, "full_state", "false")
        if full_state not in ("true", "false"):
            raise invalid_param("full_state must be true or false")
        set_presence = query_arg(request, "set_presence", "online")
        if set_presence not in ("online", "offline", "unavailable"):
            raise invalid_param("set_presence must be online, offline or unavailable")
        if presence is not None:
            # Presence is best effort: a failure to record it never fails the sync.
            try:
                await presence.user_syncing(requester.user_id, set_presence)
            except Exception:
                logger.warning("could not record presence of %s", requester.user_id, exc_info=True)
        use_state_after = query_arg(request, "use_state_after", "false")
        if use_state_after not in ("true", "false"):
            raise invalid_param("use_state_after must be true or false")
        body = await sync.sync(
            requester,
            query_arg(request, "since"),
            query_int(request, "timeout", 0, minimum=0),
            query_arg(request, "filter"),
            full_state == "true",
            use_state_after == "true",
        )
        return 200, body

    resource.register("GET", paths("/sync"), get_sync, name="sync")


def register_ephemeral(resource: JsonResource, commands: Any, authenticator: Any) -> None:
    """Mount typing, receipt and read marker endpoints (``commands``: a ``RoomCommands``)."""

    async def put_typing(request: Any, roomId: str, userId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request)
        if "typing" not in body:
            raise bad_json("'typing' is required")
        await commands.set_typing(requester, roomId, userId, body["typing"], body.get("timeout"))
        return 200, {}

    async def post_receipt(request: Any, roomId: str, receiptType: str, eventId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request, allow_empty=True)
        thread_id = body.get("thread_id")
        if thread_id is not None and not isinstance(thread_id, str):
            raise bad_json("'thread_id' must be a string")
        await commands.send_receipt(requester, roomId, receiptType, eventId, thread_id)
        return 200, {}

    async def post_read_markers(request: Any, roomId: str) -> tuple[int, Any]:
        requester = await authenticator.get_user_by_req(request, allow_guest=True)
        body = parse_json_object(request)
        await commands.read_markers(requester, roomId, body)
        return 200, {}

    resource.register("PUT", paths("/rooms/{roomId}/typing/{userId}"), put_typing, name="room_typing")
    resource.register("POST", paths("/rooms/{roomId}/receipt/{receiptType}/{eventId}"), post_receipt, name="room_receipt")
    resource.register("POST", paths("/rooms/{roomId}/read_markers"), post_read_markers, name="room_read_markers")
