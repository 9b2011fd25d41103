"""Typing notifications and read receipts (writer side), through the stream model.

Receipts are persisted (``receipts`` table, position from the room's
receipts shard) and announced on ``receipts:<shard>``. Typing is ephemeral
(the spec allows it to be lost): the owner of a room's typing shard keeps
who is typing in memory, with expiry timers on the injected clock, and
announces each change, with the room's whole typing set, on
``typing:<shard>`` at a position from that shard's sequence, so readers
never need history to know the current set.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Optional

from homeserver.core import ids
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.handlers.rooms.creation import NotShardOwnerError

RECEIPT_TYPES = ("m.read", "m.read.private")
FULLY_READ = "m.fully_read"
MAX_TYPING_TIMEOUT_MS = 120_000
DEFAULT_TYPING_TIMEOUT_MS = 30_000


async def _require_joined(store: Any, room_id: str, user_id: str) -> None:
    membership = await store.get_membership(room_id, user_id)
    if membership is None or membership.membership != "join":
        raise forbidden("You are not joined to this room")


class ReceiptHandler:
    """POST /receipt and the receipt half of /read_markers.

    ``insert(shard, room_id, type, user_id, thread_id, event_id, data)``
    persists and announces a receipt on an owned receipts shard (built in
    ``workers/``); ``account_data`` is the account data store, where
    ``m.fully_read`` lives (a server-managed type clients cannot set through
    the account data API; may be None).
    """

    def __init__(self, clock: Any, events_store: Any, insert: Callable[..., Awaitable[Any]], owned_shards: frozenset[int],
                 shard_of: Callable[[str], int], account_data: Any = None) -> None:
        self._clock = clock
        self._events = events_store
        self._insert = insert
        self._owned = owned_shards
        self._shard_of = shard_of
        self._account_data = account_data
        #: Called after a receipt is stored: ``(room_id, receipt_type, user_id, event_id, data)`` (federation).
        self.observers: list[Callable[[str, str, str, str, dict], Any]] = []

    async def send_receipt(self, requester: Any, room_id: str, receipt_type: str, event_id: str, thread_id: Optional[str]) -> Any:
        """Record a receipt of ``receipt_type`` (m.read / m.read.private / m.fully_read)."""
        if receipt_type == FULLY_READ:
            if thread_id is not None:
                raise invalid_param("m.fully_read cannot be threaded")
            await self.set_fully_read(requester, room_id, event_id)
            return None
        if receipt_type not in RECEIPT_TYPES:
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise bad_json("'thread_id' must be a non-empty string")
        if not ids.is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        await _require_joined(self._events, room_id, requester.user_id)
        rows = await self._events.get_events(room_id, [event_id])
        if event_id not in rows:
            raise not_found("Unknown event")
        shard = self._shard_of(room_id)
        if shard not in self._owned:
            raise NotShardOwnerError("receipts", shard)
        data: dict[str, Any] = {"ts": int(self._clock.seconds() * 1000)}
        if thread_id is not None:
            data["thread_id"] = thread_id
        result = await self._insert(shard, room_id, receipt_type, requester.user_id, thread_id or "", event_id, data)
        for observer in list(self.observers):
            observer(room_id, receipt_type, requester.user_id, event_id, data)
        return result

    async def set_fully_read(self, requester: Any, room_id: str, event_id: str) -> None:
        """The ``m.fully_read`` marker is room account data."""
        if not ids.is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        await _require_joined(self._events, room_id, requester.user_id)
        if self._account_data is None:
            raise MatrixError(501, Codes.UNRECOGNIZED, "Account data is not available on this instance")
        await self._account_data.set_account_data(requester.user_id, room_id, FULLY_READ, {"event_id": event_id})

    async def read_markers(self, requester: Any, room_id: str, body: Mapping[str, Any]) -> None:
        """POST /rooms/{roomId}/read_markers."""
        for key in (FULLY_READ, *RECEIPT_TYPES):
            if key in body and not isinstance(body[key], str):
                raise bad_json(f"'{key}' must be an event ID")
        if FULLY_READ in body:
            await self.set_fully_read(requester, room_id, body[FULLY_READ])
        for key in RECEIPT_TYPES:
            if key in body:
                await self.send_receipt(requester, room_id, key, body[key], None)


class TypingHandler:
    """PUT /rooms/{roomId}/typing/{userId} on the owner of the room's typing shard.

    ``announce(shard, payload)`` draws a position on the typing shard and
    publishes ``payload`` after it (built in ``workers/``).
    """

    def __init__(self, clock: Any, events_store: Any, announce: Callable[[int, dict], Awaitable[Any]],
                 owned_shards: frozenset[int], shard_of: Callable[[str], int]) -> None:
        self._clock = clock
        self._events = events_store
        self._announce = announce
        self._owned = owned_shards
        self._shard_of = shard_of
        # room -> user -> (expiry seconds, timer)
        self._typing: dict[str, dict[str, tuple[float, Any]]] = {}
        #: Called on each explicit change: ``(room_id, user_id, typing, timeout_ms)`` (federation).
        self.observers: list[Callable[[str, str, bool, int], Any]] = []

    def typing_users(self, room_id: str) -> list[str]:
        """Who is typing in the room now, sorted."""
        return sorted(self._typing.get(room_id, {}))

    async def set_typing(self, requester: Any, room_id: str, user_id: str, typing: Any, timeout_ms: Any) -> None:
        """Start (with a timeout) or stop typing."""
        if requester.user_id != user_id:
            raise forbidden("Cannot set typing for another user")
        if not isinstance(typing, bool):
            raise bad_json("'typing' must be a boolean")
        if typing:
            if timeout_ms is None:
                timeout_ms = DEFAULT_TYPING_TIMEOUT_MS
            if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0:
                raise bad_json("'timeout' must be a non-negative integer")
        shard = self._shard_of(room_id)
        if shard not in self._owned:
            raise NotShardOwnerError("typing", shard)
        await _require_joined(self._events, room_id, user_id)
        room = self._typing.setdefault(room_id, {})
        old = room.pop(user_id, None)
        if old is not None and old[1].active():
            old[1].cancel()
        if typing:
            seconds = min(timeout_ms, MAX_TYPING_TIMEOUT_MS) / 1000.0
            timer = self._clock.callLater(seconds, self._expire, room_id, user_id)
            room[user_id] = (self._clock.seconds() + seconds, timer)
            changed = old is None
        else:
            changed = old is not None
        if not room:
            self._typing.pop(room_id, None)
        if changed:
            await self._announce(shard, {"room_id": room_id, "user_ids": self.typing_users(room_id)})
        for observer in list(self.observers):
            observer(room_id, user_id, typing, timeout_ms or 0)

    def _expire(self, room_id: str, user_id: str) -> None:
        room = self._typing.get(room_id)
        if room is None or user_id not in room:
            return
        del room[user_id]
        if not room:
            self._typing.pop(room_id, None)
        d = self._announce(self._shard_of(room_id), {"room_id": room_id, "user_ids": self.typing_users(room_id)})
        if hasattr(d, "addErrback"):
            d.addErrback(lambda f: None)
