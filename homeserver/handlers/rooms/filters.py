"""Event filters of the client-server API (pure).

Spec: client-server-api "Filtering" (``EventFilter``, ``RoomEventFilter``,
``RoomFilter``, the sync ``Filter``). Parsing is lenient about unknown keys
and strict about the types of known ones (``M_BAD_JSON`` otherwise, the same
rules ``validate_filter`` applies when a filter is stored).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Mapping, Optional, Sequence

import attrs

from homeserver.errors import bad_json

DEFAULT_TIMELINE_LIMIT = 10


def _strings(body: Mapping[str, Any], key: str, where: str) -> Optional[tuple[str, ...]]:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{where}.{key}' must be a list of strings")
    return tuple(value)


def _bool(body: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise bad_json(f"'{where}.{key}' must be a boolean")
    return value


def _type_matches(pattern: str, event_type: str) -> bool:
    if "*" in pattern:
        return fnmatch.fnmatchcase(event_type, pattern.replace("[", "[[]").replace("?", "[?]"))
    return pattern == event_type


@attrs.frozen
class EventFilter:
    """``EventFilter`` / ``RoomEventFilter`` (the room fields apply where rooms exist)."""

    limit: Optional[int] = None
    types: Optional[tuple[str, ...]] = None
    not_types: tuple[str, ...] = ()
    senders: Optional[tuple[str, ...]] = None
    not_senders: tuple[str, ...] = ()
    rooms: Optional[tuple[str, ...]] = None
    not_rooms: tuple[str, ...] = ()
    contains_url: Optional[bool] = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False

    @classmethod
    def parse(cls, body: Any, where: str = "filter") -> "EventFilter":
        """Parse a (Room)EventFilter JSON object."""
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise bad_json(f"'{where}' must be an object")
        limit = body.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise bad_json(f"'{where}.limit' must be a non-negative integer")
        contains_url = body.get("contains_url")
        if contains_url is not None and not isinstance(contains_url, bool):
            raise bad_json(f"'{where}.contains_url' must be a boolean")
        return cls(
            limit=limit,
            types=_strings(body, "types", where),
            not_types=_strings(body, "not_types", where) or (),
            senders=_strings(body, "senders", where),
            not_senders=_strings(body, "not_senders", where) or (),
            rooms=_strings(body, "rooms", where),
            not_rooms=_strings(body, "not_rooms", where) or (),
            contains_url=contains_url,
            lazy_load_members=_bool(body, "lazy_load_members", where, False),
            include_redundant_members=_bool(body, "include_redundant_members", where, False),
        )

    def allows_type(self, event_type: str) -> bool:
        """Whether the type passes ``types`` / ``not_types``."""
        if any(_type_matches(p, event_type) for p in self.not_types):
            return False
        return self.types is None or any(_type_matches(p, event_type) for p in self.types)

    def allows_room(self, room_id: str) -> bool:
        """Whether the room passes ``rooms`` / ``not_rooms``."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows(self, event: Mapping[str, Any]) -> bool:
        """Whether a client-format event (or any dict with type/sender/content) passes."""
        if not self.allows_type(event.get("type", "")):
            return False
        sender = event.get("sender")
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        room_id = event.get("room_id")
        if room_id is not None and not self.allows_room(room_id):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def filter(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The events that pass (order kept; ``limit`` not applied)."""
        return [e for e in events if self.allows(e)]


@attrs.frozen
class RoomFilter:
    """The ``room`` part of a sync filter."""

    rooms: Optional[tuple[str, ...]] = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: EventFilter = EventFilter()
    state: EventFilter = EventFilter()
    ephemeral: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()

    def allows_room(self, room_id: str) -> bool:
        """Whether the room is in the filter's rooms and not excluded."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@attrs.frozen
class SyncFilter:
    """The whole sync ``Filter``."""

    room: RoomFilter = RoomFilter()
    account_data: EventFilter = EventFilter()
    presence: EventFilter = EventFilter()
    event_fields: Optional[tuple[str, ...]] = None

    @property
    def timeline_limit(self) -> int:
        """The timeline limit (10 when unset, as servers commonly choose)."""
        limit = self.room.timeline.limit
        return DEFAULT_TIMELINE_LIMIT if limit is None else limit

    @classmethod
    def parse(cls, body: Any) -> "SyncFilter":
        """Parse a sync filter JSON object (``M_BAD_JSON`` on wrong types)."""
        if body is None:
            return cls()
        if not isinstance(body, dict):
            raise bad_json("filter must be an object")
        room_body = body.get("room", {})
        if not isinstance(room_body, dict):
            raise bad_json("'room' must be an object")
        room = RoomFilter(
            rooms=_strings(room_body, "rooms", "room"),
            not_rooms=_strings(room_body, "not_rooms", "room") or (),
            include_leave=_bool(room_body, "include_leave", "room", False),
            timeline=EventFilter.parse(room_body.get("timeline"), "room.timeline"),
            state=EventFilter.parse(room_body.get("state"), "room.state"),
            ephemeral=EventFilter.parse(room_body.get("ephemeral"), "room.ephemeral"),
            account_data=EventFilter.parse(room_body.get("account_data"), "room.account_data"),
        )
        return cls(
            room=room,
            account_data=EventFilter.parse(body.get("account_data"), "account_data"),
            presence=EventFilter.parse(body.get("presence"), "presence"),
            event_fields=_strings(body, "event_fields", "filter"),
        )


def apply_event_fields(event: Mapping[str, Any], fields: Optional[Sequence[str]]) -> Mapping[str, Any]:
    """Keep only the dotted ``event_fields`` of a client event (all when None)."""
    if not fields:
        return event
    out: dict[str, Any] = {}
    for field in fields:
        path = _split_field(field)
        src: Any = event
        for key in path[:-1]:
            if not isinstance(src, Mapping) or key not in src:
                src = None
                break
            src = src[key]
        if not isinstance(src, Mapping) or path[-1] not in src:
            continue
        dst = out
        for key in path[:-1]:
            dst = dst.setdefault(key, {})
        dst[path[-1]] = src[path[-1]]
    return out


def _split_field(field: str) -> list[str]:
    """Split on unescaped dots (``\\.`` is a literal dot)."""
    parts, cur, escaped = [], "", False
    for ch in field:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts
