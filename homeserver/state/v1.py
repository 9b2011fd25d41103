"""State resolution v1 (room version 1), pure Python.

Spec: rooms/v1.md "State resolution". It is only used by version 1 rooms, is
cheap (it never walks auth chains), and so has no C kernel. Where the spec text
leaves details open we follow Synapse (``synapse/state/v1.py``), the behaviour
the federation converged on:

- a key is conflicted only when two state sets hold different events for it (a
  key missing from some sets is not a conflict);
- the initial auth state for the conflicted events is taken from the
  unconflicted state map, for the keys their authorization may consult;
- "other" conflicts are checked against the resolved power levels, join rules
  and memberships (not against each other); if none passes, the one with the
  lowest depth (last in the order) is kept.
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable, Mapping, Sequence

from homeserver.state import _pure
from homeserver.state._auth import is_allowed
from homeserver.state.interning import JOIN_RULES, MEMBER, POWER_LEVELS, auth_types_for_event

_POWER_KEY = (POWER_LEVELS, "")


def _ordered(events: list[Any]) -> list[Any]:
    """Descending depth, then ascending sha1(event_id) (hex)."""

    def key(e: Any) -> tuple[int, str]:
        depth = e.depth if isinstance(e.depth, int) else 0
        return -depth, hashlib.sha1(e.event_id.encode("utf-8")).hexdigest()

    return sorted(events, key=key)


def _resolve_auth_events(room_version: Any, events: list[Any], auth_events: Mapping[Hashable, Any]) -> Any:
    """Ascending depth, then descending sha1: take the first, then each next
    one while it is allowed in the state so far."""
    ordered = list(reversed(_ordered(events)))
    auth_keys = {k for e in events for k in auth_types_for_event(room_version, e)}
    state = {k: auth_events[k] for k in auth_keys if k in auth_events}
    prev = ordered[0]
    for event in ordered[1:]:
        state[(prev.type, prev.state_key)] = prev
        if not is_allowed(room_version, event, state):
            return prev
        prev = event
    return prev


def _resolve_normal_events(room_version: Any, events: list[Any], auth_events: Mapping[Hashable, Any]) -> Any:
    """The highest-depth (then lowest sha1) event allowed in the state."""
    ordered = _ordered(events)
    for event in ordered:
        if is_allowed(room_version, event, auth_events):
            return event
    return ordered[-1]


def resolve_v1(
    room_version: Any,
    state_sets: Sequence[Mapping[Hashable, str]],
    event_map: Mapping[str, Any],
) -> dict[Hashable, str]:
    """Resolve ``state_sets`` with the room version 1 algorithm."""
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted_ids = _pure.separate(state_sets, False)
    result = dict(unconflicted)
    conflicted: dict[Hashable, list[Any]] = {}
    for key, ids in conflicted_ids.items():
        events = [event_map[e] for e in ids if e in event_map]
        if len(events) > 1:
            conflicted[key] = events
        elif events:
            result[key] = events[0].event_id

    auth_events: dict[Hashable, Any] = {}
    for events in conflicted.values():
        for event in events:
            for key in auth_types_for_event(room_version, event):
                if key not in auth_events:
                    aid = unconflicted.get(key)
                    if aid is not None and aid in event_map:
                        auth_events[key] = event_map[aid]

    resolved: dict[Hashable, Any] = {}
    if _POWER_KEY in conflicted:
        resolved[_POWER_KEY] = _resolve_auth_events(room_version, conflicted[_POWER_KEY], auth_events)
    auth_events.update(resolved)
    for event_type in (JOIN_RULES, MEMBER):
        for key, events in conflicted.items():
            if key[0] == event_type:
                resolved[key] = _resolve_auth_events(room_version, events, auth_events)
        auth_events.update(resolved)
    for key, events in conflicted.items():
        if key not in resolved:
            resolved[key] = _resolve_normal_events(room_version, events, auth_events)
    for key, event in resolved.items():
        result[key] = event.event_id
    return result
