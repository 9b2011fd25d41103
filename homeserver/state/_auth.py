"""Adapter from kernel indices to the core authorization rules."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from homeserver.core.auth import check_auth_rules
from homeserver.core.errors import AuthError
from homeserver.core.ids import get_domain_from_id, is_valid_user_id
from homeserver.core.power_levels import (
    DEFAULT_STATE_DEFAULT,
    DEFAULT_USERS_DEFAULT,
    NO_POWER_LEVELS_CREATOR_LEVEL,
    get_room_creators,
    parse_power_level,
)
from homeserver.state._util import content_of


def is_allowed(room_version: Any, event: Any, auth_events: Mapping[tuple[str, str], Any]) -> bool:
    """Whether the core authorization rules allow ``event`` given
    ``auth_events`` (which, in room v12, includes the create event)."""

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


# --- Pre-parsed data for the C kernel's fast authorization path ---------------
#
# The C kernel decides the authorization rules itself for ordinary state events
# and power levels events (homeserver.core.auth.check_auth_rules restricted to
# those), over tables parsed here once per event. Anything it does not model
# (membership, create, aliases, third-party invites, malformed power levels)
# goes to the Python rules through the ``check`` callback. The differential
# tests compare it with the pure kernel, which always asks the Python rules.

KIND_PYTHON = 0
KIND_STATE = 1
KIND_POWER_LEVELS = 2

# Must match the order of the named levels in _speedups.c (users_default first,
# state_default third) and the keys core's power level check compares.
LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
_LEVEL_BOUND = 2**62  # C stores levels as int64 with "infinite" above them

_PYTHON_TYPES = ("m.room.member", "m.room.create", "m.room.third_party_invite")


class _Unclean(Exception):
    pass


def configure(room_graph: Any) -> None:
    """Send the room-wide settings of the fast path to the kernel graph."""

    rv = room_graph.room_version
    graph = room_graph.graph
    graph.set_room_config(
        infinite_creators=bool(rv.creators_have_infinite_power),
        limit_notifications=bool(rv.limit_notifications_power_levels),
        create_key=graph.add_key(("m.room.create", "")),
        power_levels_key=graph.add_key(("m.room.power_levels", "")),
        users_default=DEFAULT_USERS_DEFAULT,
        state_default=DEFAULT_STATE_DEFAULT,
        no_power_levels_creator_level=NO_POWER_LEVELS_CREATOR_LEVEL,
    )


def _level(value: Any, rv: Any) -> int:

    try:
        level = parse_power_level(value, rv)
    except ValueError:
        raise _Unclean() from None
    if not -_LEVEL_BOUND < level < _LEVEL_BOUND:
        raise _Unclean()
    return level


_valid_user_cache: dict[str, bool] = {}


def _is_valid_user_id(user_id: str) -> bool:
    # Power levels events repeat the same users map: validate each ID once.
    valid = _valid_user_cache.get(user_id)
    if valid is None:
        valid = is_valid_user_id(user_id)
        if len(_valid_user_cache) > 100_000:
            _valid_user_cache.clear()
        _valid_user_cache[user_id] = valid
    return valid


def _level_map(content: Mapping[str, Any], sub: str, rv: Any, name_id: Callable[[str], int],
               user_ids: bool) -> list[tuple[int, int]]:

    mapping = content.get(sub, {})
    if not isinstance(mapping, (dict, Mapping)):
        raise _Unclean()
    result = []
    for key, value in mapping.items():
        if not isinstance(key, str) or (user_ids and not _is_valid_user_id(key)):
            raise _Unclean()
        result.append((name_id(key), _level(value, rv)))
    return result


def power_levels_table(content: Mapping[str, Any], rv: Any, name_id: Callable[[str], int]) -> Any:
    """The parsed table of a power levels event, or None when any value is
    not a clean level (then the Python rules decide)."""
    try:
        named = [(_level(content[k], rv) if k in content else None) for k in LEVEL_KEYS]
        return (
            named,
            _level_map(content, "events", rv, name_id, False),
            _level_map(content, "users", rv, name_id, True),
            _level_map(content, "notifications", rv, name_id, False),
        )
    except _Unclean:
        return None


def set_auth_info(room_graph: Any, idx: int, event: Any, name_id: Callable[[str], int]) -> None:
    """Compute and store the fast-path data of one interned event."""

    rv = room_graph.room_version
    graph = room_graph.graph
    content = content_of(event)
    etype = event.type
    if etype == "m.room.member":
        # Only its membership matters, when it is the sender's membership.
        if content.get("membership") == "join":
            graph.set_auth_info(idx, KIND_PYTHON, 1, -1, -1, -1, -1, -1, False, None, None)
        return
    hashed_room = rv.room_id_is_create_event_hash
    is_create = etype == "m.room.create" and event.state_key == ""
    if hashed_room:
        room_key = name_id("room:" + (event.event_id[1:] if is_create else event.room_id[1:]))
    else:
        room_key = name_id("room:" + event.room_id)
    try:
        sender_domain = name_id("domain:" + get_domain_from_id(event.sender))
    except ValueError:
        return
    create_info = None
    if is_create:
        creators = [name_id(u) for u in get_room_creators(event, rv)]
        create_info = (creators, content.get("m.federate", True) is True, sender_domain)
    kind = KIND_STATE
    table = None
    if (
        event.state_key is None
        or etype in _PYTHON_TYPES
        or (etype == "m.room.aliases" and rv.special_case_aliases_auth)
        or (etype == "m.room.redaction" and rv.redaction_auth_rule)
    ):
        kind = KIND_PYTHON
    if etype == "m.room.power_levels":
        table = power_levels_table(content, rv, name_id)
        if kind == KIND_STATE:
            kind = KIND_POWER_LEVELS if table is not None else KIND_PYTHON
    state_key = event.state_key
    rule9 = isinstance(state_key, str) and state_key.startswith("@") and state_key != event.sender
    sender_member_key = graph.add_key(("m.room.member", event.sender))
    graph.set_auth_info(
        idx, kind, 0, name_id(etype), name_id(event.sender), sender_domain, room_key,
        sender_member_key, rule9, table, create_info,
    )
