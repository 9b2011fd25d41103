"""Loading events from the store and presenting them to clients.

:class:`EventLoader` turns stored rows into :class:`Event` objects (with an
LRU of parsed events: the PDU never changes, only row flags such as
``redacted_by`` do, and those are always read fresh) and serialises them in
the client-server "ClientEvent" format, applying redactions.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Iterable, Mapping, Optional, Sequence

from homeserver.core.events import Event, thaw
from homeserver.core.redaction import prune_event_dict
from homeserver.core.room_versions import RoomVersion, get_room_version
from homeserver.errors import not_found


def client_event(event: Event, now_ms: int, *, redacted_because: Optional[Mapping[str, Any]] = None,
                 transaction_id: Optional[str] = None, include_room_id: bool = True) -> dict[str, Any]:
    """The client format of ``event`` (``ClientEvent``), pruned if it was redacted.

    ``redacted_because`` is the client form of the redaction that applies,
    if any; ``transaction_id`` is set only for the device that sent it.
    """
    pdu = event.pdu
    if redacted_because is not None:
        content = thaw(prune_event_dict(event.room_version, pdu).get("content", {}))
    else:
        content = thaw(event.content)
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
        "content": content,
    }
    if include_room_id:
        out["room_id"] = event.room_id
    if event.state_key is not None:
        out["state_key"] = event.state_key
    if event.redacts is not None and redacted_because is None:
        out["redacts"] = event.redacts
    unsigned: dict[str, Any] = {"age": max(0, now_ms - event.origin_server_ts)}
    stored_unsigned = event.unsigned
    for key in ("prev_content", "replaces_state", "prev_sender", "invite_room_state"):
        if key in stored_unsigned and redacted_because is None:
            unsigned[key] = thaw(stored_unsigned[key])
    if "replaces_state" in stored_unsigned:
        unsigned["replaces_state"] = stored_unsigned["replaces_state"]
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
    if transaction_id is not None:
        unsigned["transaction_id"] = transaction_id
    out["unsigned"] = unsigned
    return out


def stripped_state(event: Event) -> dict[str, Any]:
    """The stripped state form of a state event (invites, knocks)."""
    return {
        "type": event.type,
        "state_key": event.state_key,
        "sender": event.sender,
        "content": thaw(event.content),
    }


class EventLoader:
    """Reads events of rooms through the event store, caching parsed events."""

    def __init__(self, store: Any, clock: Any, cache_size: int = 50_000) -> None:
        self._store = store
        self._clock = clock
        self._cache: "collections.OrderedDict[str, Event]" = collections.OrderedDict()
        self._cache_size = cache_size
        self._versions: dict[str, RoomVersion] = {}

    def now_ms(self) -> int:
        """The clock's time in milliseconds."""
        return int(self._clock.seconds() * 1000)

    async def room_version(self, room_id: str) -> Optional[RoomVersion]:
        """The room's version, or None when the room is unknown here."""
        version = self._versions.get(room_id)
        if version is None:
            room = await self._store.get_room(room_id)
            if room is None:
                return None
            version = self._versions[room_id] = get_room_version(room.room_version)
        return version

    def remember_version(self, room_id: str, version: RoomVersion) -> None:
        """Record a room's version (known to its creator before the row is read back)."""
        self._versions[room_id] = version

    def parse(self, row: Any, version: RoomVersion) -> Event:
        """The :class:`Event` of a stored row (cached by event ID)."""
        event = self._cache.get(row.event_id)
        if event is not None:
            self._cache.move_to_end(row.event_id)
            return event
        # Stored rows were validated (and their IDs computed) before they
        # were persisted: rebuilding them skips both (Event.from_stored).
        event = Event.from_stored(json.loads(row.json), version, row.event_id)
        self.remember(event)
        return event

    def remember(self, event: Event) -> None:
        """Put a just-created event in the cache."""
        self._cache[event.event_id] = event
        self._cache.move_to_end(event.event_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def get_events(self, room_id: str, event_ids: Iterable[str]) -> dict[str, Event]:
        """Events of one room by ID (missing ones are absent)."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, Event] = {}
        missing = []
        for event_id in ids:
            event = self._cache.get(event_id)
            if event is not None and event.room_id == room_id:
                out[event_id] = event
            else:
                missing.append(event_id)
        if missing:
            version = await self.room_version(room_id)
            if version is None:
                return out
            rows = await self._store.get_events(room_id, missing)
            for event_id, row in rows.items():
                out[event_id] = self.parse(row, version)
        return out

    async def get_event(self, room_id: str, event_id: str) -> Event:
        """One event, or 404."""
        events = await self.get_events(room_id, [event_id])
        if event_id not in events:
            raise not_found("Event not found")
        return events[event_id]

    async def state_events(self, room_id: str, state_ids: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], Event]:
        """Resolve a state map of event IDs to events."""
        events = await self.get_events(room_id, state_ids.values())
        return {k: events[e] for k, e in state_ids.items() if e in events}

    async def serialize_rows(self, room_id: str, rows: Sequence[Any], *, txn_ids: Optional[Mapping[str, str]] = None,
                             include_room_id: bool = True) -> list[dict[str, Any]]:
        """Client-format events for stored rows of one room (fresh rows: their redaction flags are current)."""
        version = await self.room_version(room_id)
        if version is None:
            return []
        now = self.now_ms()
        redaction_ids = [r.redacted_by for r in rows if r.redacted_by]
        redactions = await self.get_events(room_id, redaction_ids) if redaction_ids else {}
        out = []
        for row in rows:
            event = self.parse(row, version)
            because = None
            if row.redacted_by and row.redacted_by in redactions:
                because = client_event(redactions[row.redacted_by], now, include_room_id=include_room_id)
            out.append(client_event(event, now, redacted_because=because,
                                    transaction_id=(txn_ids or {}).get(row.event_id), include_room_id=include_room_id))
        return out
