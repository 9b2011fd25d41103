"""Adapter from kernel indices to the core authorization rules."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from homeserver.core.auth import check_auth_rules
from homeserver.core.errors import AuthError
from homeserver.core.ids import get_domain_from_id, is_valid_user_id
from homeserver.core.power_levels import (
    NAMED_LEVEL_DEFAULTS,
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
KIND_MEMBER = 3

_MEMBERSHIP_CODES = {"join": 1, "invite": 2, "leave": 3, "ban": 4, "knock": 5}
_JOIN_RULE_CODES = {"public": 1, "invite": 2, "knock": 3, "restricted": 4, "knock_restricted": 5}
_OTHER = 6

# Must match the order of the named levels in _speedups.c (users_default first,
# state_default third) and the keys core's power level check compares.
LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
_LEVEL_BOUND = 2**62  # C stores levels as int64 with "infinite" above them

_PYTHON_TYPES = ("m.room.create", "m.room.third_party_invite")


class _Unclean(Exception):
    pass


def configure(room_graph: Any) -> None:
    """Send the room-wide settings of the fast path to the kernel graph."""
    rv = room_graph.room_version
    graph = room_graph.graph
    graph.set_room_config(
        infinite_creators=bool(rv.creators_have_infinite_power),
        limit_notifications=bool(rv.limit_notifications_power_levels),
        knock_join_rule=bool(rv.knock_join_rule),
        restricted_join_rule=bool(rv.restricted_join_rule),
        knock_restricted_join_rule=bool(rv.knock_restricted_join_rule),
        create_key=graph.add_key(("m.room.create", "")),
        power_levels_key=graph.add_key(("m.room.power_levels", "")),
        join_rules_key=graph.add_key(("m.room.join_rules", "")),
        named_defaults=[NAMED_LEVEL_DEFAULTS[k] for k in LEVEL_KEYS],
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
    """Compute and store the fast-path data of one interned event: what the
    C kernel needs when the event is authorised, and when it serves as an
    auth event (membership, join rule, power levels table, create info)."""
    rv = room_graph.room_version
    graph = room_graph.graph
    content = content_of(event)
    etype = event.type
    state_key = event.state_key
    is_create = etype == "m.room.create" and state_key == ""
    if is_create:
        room_graph.create_event_ids.add(event.event_id)
    code = 0
    if etype == "m.room.member":
        membership = content.get("membership")
        if isinstance(membership, str):
            code = _MEMBERSHIP_CODES.get(membership, _OTHER)
    elif etype == "m.room.join_rules":
        join_rule = content.get("join_rule", "invite")
        code = _JOIN_RULE_CODES.get(join_rule, _OTHER) if isinstance(join_rule, str) else _OTHER
    if rv.room_id_is_create_event_hash:
        room_key = name_id("room:" + (event.event_id[1:] if is_create else event.room_id[1:]))
    else:
        room_key = name_id("room:" + event.room_id)
    try:
        sender_domain = name_id("domain:" + get_domain_from_id(event.sender))
    except ValueError:
        sender_domain = -1
    create_info = None
    if is_create and sender_domain >= 0:
        creators = [name_id(u) for u in get_room_creators(event, rv)]
        create_info = (creators, content.get("m.federate", True) is True, sender_domain)

    kind = KIND_STATE
    table = None
    target_id = target_domain = target_mkey = -1
    if (
        state_key is None
        or sender_domain < 0
        or etype in _PYTHON_TYPES
        or (etype == "m.room.aliases" and rv.special_case_aliases_auth)
        or (etype == "m.room.redaction" and rv.redaction_auth_rule)
    ):
        kind = KIND_PYTHON
    elif etype == "m.room.member":
        kind = KIND_MEMBER
        try:
            target_domain = name_id("domain:" + get_domain_from_id(state_key))
        except ValueError:
            kind = KIND_PYTHON
        target_id = name_id(state_key)
        target_mkey = graph.add_key(("m.room.member", state_key))
        prev = event.prev_event_ids
        if code == 2 and "third_party_invite" in content:
            kind = KIND_PYTHON
        if code == 1 and len(prev) == 1 and prev[0] in room_graph.create_event_ids:
            kind = KIND_PYTHON  # the creator's first join: a rule of its own
    if etype == "m.room.power_levels":
        table = power_levels_table(content, rv, name_id)
        if kind == KIND_STATE:
            kind = KIND_POWER_LEVELS if table is not None else KIND_PYTHON
    rule9 = isinstance(state_key, str) and state_key.startswith("@") and state_key != event.sender
    sender_member_key = graph.add_key(("m.room.member", event.sender))
    graph.set_auth_info(
        idx, kind, code, name_id(etype), name_id(event.sender), sender_domain, room_key,
        sender_member_key, target_id, target_domain, target_mkey, rule9, table, create_info,
    )
