"""Send-to-device messaging (client-server API, "Send-to-Device messaging").

``PUT /sendToDevice/{eventType}/{txnId}`` is validated here (pure:
:func:`parse_send_body`), then each local recipient's messages are stored by
the owner of the recipient's shard of the ``to_device`` stream
(``to_device.deliver`` command) at one new position of that shard, once per
``(sender, sender device, txnId, recipient)``.

Remote recipients get one ``m.direct_to_device`` EDU per server (server-server
API, "Send-to-device messaging"), queued on the durable outbound queue. Its
``message_id`` is derived from ``(sender, sender device, txnId, destination)``
so that a client retrying the same transaction produces the same ID, which
the receiving server uses to drop the repeat. Received EDUs are delivered
like local messages, with ``message_id`` in place of the transaction ID, so a
retried federation transaction delivers each message once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Awaitable, Callable, Mapping, Optional

from unpaddedbase64 import encode_base64

from homeserver.errors import bad_json, forbidden, invalid_param

logger = logging.getLogger(__name__)

#: Event types are namespaced identifiers; no whitespace or control characters, bounded length.
_EVENT_TYPE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")
_MAX_TXN_ID = 255

#: The EDU type of to-device messages between servers.
DIRECT_TO_DEVICE = "m.direct_to_device"


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def federation_message_id(sender: str, sender_device: str, txn_id: str, destination: str) -> str:
    """The ``message_id`` of the EDU for one client transaction to one server (stable across retries)."""
    digest = hashlib.sha256("\x00".join((sender, sender_device, txn_id, destination)).encode("utf-8")).digest()
    return encode_base64(digest[:18], urlsafe=True)


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
        #: ``(destination, edu) -> None``: queues an EDU for a remote server
        #: (set when this process federates; without it remote recipients are skipped).
        self.send_remote: Optional[Callable[[str, dict[str, Any]], Awaitable[None]]] = None

    def register(self) -> None:
        """Register ``to_device.deliver`` (run on the owner of the recipient's ``to_device`` shard)."""
        self._dispatcher.register("to_device.deliver", "to_device", self._deliver)

    async def send(self, requester: Any, event_type: str, txn_id: str, body: Any) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}: deliver to every local recipient (idempotent per txn)."""
        messages = parse_send_body(event_type, txn_id, body)
        sender_device = requester.device_id or ""
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, devices in messages.items():
            server = _server_of(user_id)
            if server != self._server_name:
                remote.setdefault(server, {})[user_id] = devices
                continue
            await self._dispatcher.run("to_device.deliver", user_id, {
                "sender": requester.user_id, "sender_device": sender_device, "txn_id": txn_id,
                "user_id": user_id, "event_type": event_type, "messages": devices,
            })
        for server, by_user in sorted(remote.items()):
            if self.send_remote is None:
                logger.info("to-device %s from %s to %s not sent: this server does not federate",
                            event_type, requester.user_id, server)
                continue
            await self.send_remote(server, {"edu_type": DIRECT_TO_DEVICE, "content": {
                "sender": requester.user_id, "type": event_type,
                "message_id": federation_message_id(requester.user_id, sender_device, txn_id, server),
                "messages": by_user,
            }})

    async def receive_remote(self, origin: str, content: Any) -> None:
        """An ``m.direct_to_device`` EDU from ``origin``: deliver its messages to local recipients.

        The sender must belong to ``origin`` (M_FORBIDDEN otherwise); entries
        for users of other servers and malformed entries are dropped.
        """
        if not isinstance(content, Mapping):
            raise bad_json("content must be an object")
        sender, event_type, message_id = content.get("sender"), content.get("type"), content.get("message_id")
        messages = content.get("messages")
        if not isinstance(sender, str) or _server_of(sender) != origin:
            raise forbidden(f"{origin} cannot send to-device messages for {sender!r}")
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            raise bad_json("invalid type")
        if not isinstance(message_id, str) or not message_id or len(message_id) > _MAX_TXN_ID:
            raise bad_json("invalid message_id")
        if not isinstance(messages, Mapping):
            raise bad_json("'messages' must be an object")
        for user_id, devices in messages.items():
            if not isinstance(user_id, str) or _server_of(user_id) != self._server_name:
                continue
            if not isinstance(devices, Mapping) or not devices:
                continue
            if not all(isinstance(d, str) and d and isinstance(c, Mapping) for d, c in devices.items()):
                continue
            await self._dispatcher.run("to_device.deliver", user_id, {
                "sender": sender, "sender_device": "", "txn_id": message_id,
                "user_id": user_id, "event_type": event_type, "messages": dict(devices),
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
