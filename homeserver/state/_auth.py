"""Adapter from kernel indices to the core authorization rules."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from homeserver.core.errors import AuthError


def is_allowed(room_version: Any, event: Any, auth_events: Mapping[tuple[str, str], Any]) -> bool:
    """Whether the core authorization rules allow ``event`` given
    ``auth_events`` (which, in room v12, includes the create event)."""
    from homeserver.core.auth import check_auth_rules

    try:
        check_auth_rules(room_version, event, auth_events)
    except AuthError:
        return False
    return True


def make_checker(room_graph: Any) -> Callable[[int, list[int]], bool]:
    """The ``check(event_index, auth_indices)`` callback the kernels call
    during the iterative auth checks."""
    rv = room_graph.room_version
    events = room_graph.events

    def check(e: int, auth: list[int]) -> bool:
        auth_events = {}
        for a in auth:
            aev = events[a]
            auth_events[(aev.type, aev.state_key)] = aev
        return is_allowed(rv, events[e], auth_events)

    return check
