"""Loading state resolution scenarios from ``fixtures/*.json``.

A fixture names its events symbolically. Each event is
``{"id", "type", "sender", "state_key"?, "content", "auth", "prev", "ts"}``
where ``auth`` / ``prev`` list earlier names. The loader builds real PDUs for
a room version with :meth:`Event.from_pdu`: explicit ``$NAME:example.com`` IDs
in rooms v1/v2, reference hashes in later versions (where the create event is
dropped from ``auth`` in room v12, as that format requires). ``state_sets`` and
``expected`` list event names; the ``(type, state_key)`` of each named event
gives its key. ``rejected`` lists events the server has rejected.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs

from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, EventFormat

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@attrs.frozen
class Scenario:
    """One fixture built for one room version."""

    name: str
    room_version: Any
    events: dict[str, Event]  # by symbolic name
    event_map: dict[str, Event]  # by event ID
    state_sets: list[dict[tuple[str, str], str]]
    expected: dict[tuple[str, str], str]
    rejected: frozenset[str]

    def id_of(self, name: str) -> str:
        """The event ID behind a symbolic name."""
        return self.events[name].event_id

    def name_of(self, event_id: str) -> str:
        """The symbolic name behind an event ID (for readable failures)."""
        for name, event in self.events.items():
            if event.event_id == event_id:
                return name
        return event_id


def fixture_names() -> list[str]:
    """Names of all fixtures (file names without ``.json``)."""
    return sorted(f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".json"))


def load_raw(name: str) -> dict[str, Any]:
    """The parsed JSON of a fixture."""
    with open(os.path.join(FIXTURES, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def build_events(specs: list[dict[str, Any]], room_version: Any) -> dict[str, Event]:
    """Build events from fixture specs, in order, for ``room_version``."""
    events: dict[str, Event] = {}
    v1_format = room_version.event_format is EventFormat.V1
    hashed_room = room_version.room_id_is_create_event_hash
    room_id = "!room:example.com"
    for i, spec in enumerate(specs):
        name = spec["id"]
        is_create = spec["type"] == "m.room.create"
        auth = [events[a].event_id for a in spec.get("auth", []) if not (hashed_room and events[a].type == "m.room.create")]
        prev = [events[p].event_id for p in spec.get("prev", [])]
        pdu: dict[str, Any] = {
            "type": spec["type"],
            "sender": spec["sender"],
            "content": spec.get("content", {}),
            "origin_server_ts": spec.get("ts", i + 1),
            "depth": spec.get("depth", i + 1),
            "hashes": {"sha256": "x"},
            "signatures": {},
        }
        if "state_key" in spec:
            pdu["state_key"] = spec["state_key"]
        if v1_format:
            pdu["event_id"] = "$%s:example.com" % name
            pdu["auth_events"] = [[a, {}] for a in auth]
            pdu["prev_events"] = [[p, {}] for p in prev]
        else:
            pdu["auth_events"] = auth
            pdu["prev_events"] = prev
        if not (hashed_room and is_create):
            pdu["room_id"] = room_id
        event = Event.from_pdu(pdu, room_version)
        if hashed_room and is_create:
            room_id = event.room_id
        events[name] = event
    return events


def load(name: str, room_version_id: str) -> Scenario:
    """Build fixture ``name`` for room version ``room_version_id``."""
    raw = load_raw(name)
    room_version = KNOWN_ROOM_VERSIONS[room_version_id]
    events = build_events(raw["events"], room_version)

    def state(names: list[str]) -> dict[tuple[str, str], str]:
        result = {}
        for n in names:
            e = events[n]
            assert e.state_key is not None, n
            result[(e.type, e.state_key)] = e.event_id
        return result

    expected_names = raw["expected"]
    if isinstance(expected_names, dict):
        expected_names = expected_names.get(room_version_id, expected_names["default"])
    return Scenario(
        name=name,
        room_version=room_version,
        events=events,
        event_map={e.event_id: e for e in events.values()},
        state_sets=[state(s) for s in raw["state_sets"]],
        expected=state(expected_names),
        rejected=frozenset(events[n].event_id for n in raw.get("rejected", [])),
    )
