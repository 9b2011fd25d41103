"""Send-to-device messaging (client-server API, "Send-to-Device messaging").

``PUT /sendToDevice/{eventType}/{txnId}`` is validated here (pure:
:func:`parse_send_body`), then each local recipient's messages are stored by
the owner of the recipient's shard of the ``to_device`` stream
(``to_device.deliver`` command) at one new position of that shard, once per
``(sender, sender device, txnId, recipient)``. Remote recipients are skipped
(the ``m.direct_to_device`` EDU is not sent yet).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Mapping

from homeserver.errors import bad_json, invalid_param

logger = logging.getLogger(__name__)

#: Event types are namespaced identifiers; no whitespace or control characters, bounded length.
_EVENT_TYPE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")
_MAX_TXN_ID = 255


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def parse_send_body(event_type: str, txn_id: str, body: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``messages`` of a sendToDevice body: user ID -> device ID (or ``*``) -> content.

    Raises ``M_INVALID_PARAM`` for a bad event type or transaction ID and
    ``M_BAD_JSON`` for a body of the wrong shape.
    """
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise invalid_param("Invalid event type")
    if not isinstance(txn_id, str) or not txn_id or len(txn_id) > _MAX_TXN_ID:
        raise invalid_param("Invalid transaction ID")
    if not isinstance(body, dict):
        raise bad_json("Body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, dict):
        raise bad_json("'messages' must be an object")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for user_id, devices in messages.items():
        if not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if not isinstance(devices, dict):
            raise bad_json(f"Messages for {user_id} must be an object")
        for device_id, content in devices.items():
            if not device_id:
                raise invalid_param("Empty device ID")
            if not isinstance(content, dict):
                raise bad_json(f"Content for {user_id}/{device_id} must be an object")
        if devices:
            out[user_id] = devices
    return out


class ToDeviceCommands:
    """The sendToDevice write path: validation here, storage on the recipient's shard owner."""

    def __init__(self, clock: Any, server_name: str, dispatcher: Any, store: Any,
                 allocators: Mapping[int, Any], shard_of: Callable[[str], int]) -> None:
        self._clock = clock
        self._server_name = server_name
        self._dispatcher = dispatcher
        self._store = store
        self._allocators = allocators
        self._shard_of = shard_of

    def register(self) -> None:
        """Register ``to_device.deliver`` (run on the owner of the recipient's ``to_device`` shard)."""
        self._dispatcher.register("to_device.deliver", "to_device", self._deliver)

    async def send(self, requester: Any, event_type: str, txn_id: str, body: Any) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}: deliver to every local recipient (idempotent per txn)."""
        messages = parse_send_body(event_type, txn_id, body)
        sender_device = requester.device_id or ""
        for user_id, devices in messages.items():
            if _server_of(user_id) != self._server_name:
                logger.info("to-device %s from %s to remote user %s not sent (no federation EDU yet)",
                            event_type, requester.user_id, user_id)
                continue
            await self._dispatcher.run("to_device.deliver", user_id, {
                "sender": requester.user_id, "sender_device": sender_device, "txn_id": txn_id,
                "user_id": user_id, "event_type": event_type, "messages": devices,
            })

    async def _deliver(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args["user_id"])
        messages = args.get("messages")
        if not isinstance(messages, dict):
            raise bad_json("'messages' must be an object")
        allocator = self._allocators.get(self._shard_of(user_id))
        if allocator is None:
            raise invalid_param("to_device shard not owned here")
        row = await self._store.deliver(
            allocator, str(args["sender"]), str(args["sender_device"]), str(args["txn_id"]), user_id,
            str(args["event_type"]), messages, int(self._clock.seconds() * 1000),
            on_row=lambda r: allocator.attach(r.stream_position, r.to_payload()),
        )
        return {"position": row.stream_position if row is not None else None}
