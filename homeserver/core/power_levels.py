"""Power level helpers: who has which level, and what level an action needs.

Spec: client-server-api ``m.room.power_levels`` (defaults), server-server-api
"Checks performed on receipt of a PDU" / "Definitions" (required power level,
invite / kick / ban / redact levels), room version fragments
v1-stringy-power-levels and v1-floaty-power-levels (values as strings or floats
before room v10), rooms/v10 (integers only), rooms/v12 (room creators have
infinite power).

All functions are pure: they take the ``m.room.power_levels`` and
``m.room.create`` events (or None) and return ints. Room creators in room
version 12 have :data:`CREATOR_POWER_LEVEL`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from homeserver.core.room_versions import RoomVersion

if TYPE_CHECKING:
    from homeserver.core.events import Event

PowerLevel = int

# rooms/v12: "The power level of room creators is infinitely high." Like
# Synapse we use 2**53: above every integer canonical JSON can carry (room v12
# enforces canonical JSON), so it compares as infinite, and it stays an int
# (simple to sort by, and to mirror in the C state resolution).
CREATOR_POWER_LEVEL: int = 2**53

# client-server-api m.room.power_levels: defaults when a key is absent.
DEFAULT_USERS_DEFAULT = 0
DEFAULT_EVENTS_DEFAULT = 0
DEFAULT_STATE_DEFAULT = 50
DEFAULT_INVITE = 0
DEFAULT_KICK = 50
DEFAULT_BAN = 50
DEFAULT_REDACT = 50
DEFAULT_NOTIFICATION_LEVEL = 50
# With no m.room.power_levels event at all, the creator has 100.
NO_POWER_LEVELS_CREATOR_LEVEL = 100

NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": DEFAULT_USERS_DEFAULT,
    "events_default": DEFAULT_EVENTS_DEFAULT,
    "state_default": DEFAULT_STATE_DEFAULT,
    "ban": DEFAULT_BAN,
    "kick": DEFAULT_KICK,
    "redact": DEFAULT_REDACT,
    "invite": DEFAULT_INVITE,
}


def parse_power_level(value: Any, room_version: RoomVersion) -> int:
    """Interpret one power level value for ``room_version``.

    Spec: rooms v1-v9 accept integers, strings that are integers (fragment
    v1-stringy-power-levels) and floats, which are truncated (fragment
    v1-floaty-power-levels; infinities and NaN are refused). Rooms v10+ accept
    only JSON integers (rooms/v10 auth rules 10.1, 10.2). Raises ValueError.

    Before v10 we coerce exactly as Synapse does (Python's ``int()``), so
    that rooms auth identically: this also accepts booleans and strings with
    ``_`` digit separators or non-ASCII digits, which the spec's string
    grammar does not list.
    """
    if room_version.enforce_int_power_levels:
        if type(value) is not int:
            raise ValueError("%r is not an integer power level" % (value,))
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("%r is not a finite power level" % (value,))
    if not isinstance(value, (int, str, float)):
        raise ValueError("%r is not a power level" % (value,))
    try:
        return int(value)
    except ValueError:
        raise ValueError("%r is not an integer" % (value,)) from None


def _content(event: "Event | None") -> Mapping[str, Any]:
    return event.content if event is not None else {}


def _level_or_default(value: Any, default: int, room_version: RoomVersion) -> int:
    if value is None:
        return default
    try:
        return parse_power_level(value, room_version)
    except ValueError:
        # A malformed value that got into the room (rooms v1-v9 only check
        # the values being changed) reads as the default.
        return default


def get_room_creators(create_event: "Event | None", room_version: RoomVersion) -> frozenset[str]:
    """The room's creators.

    Spec: rooms/v12 "room creators": the create event's ``sender`` plus any
    ``content.additional_creators``. Before v12 the single creator is the
    ``sender`` (rooms v11 "implicit creator") or ``content.creator`` (v1-v10).
    """
    if create_event is None:
        return frozenset()
    if room_version.additional_creators:
        creators = {create_event.sender}
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, (list, tuple)):
            creators.update(u for u in extra if isinstance(u, str))
        return frozenset(creators)
    if room_version.implicit_room_creator:
        return frozenset({create_event.sender})
    creator = create_event.content.get("creator")
    return frozenset({creator}) if isinstance(creator, str) else frozenset()


def get_user_power_level(
    user_id: str,
    power_levels_event: "Event | None",
    create_event: "Event | None",
    room_version: RoomVersion,
) -> PowerLevel:
    """The power level of ``user_id``.

    Spec: client-server-api m.room.power_levels (``users``, then
    ``users_default``, default 0); "if there is no m.room.power_levels event
    the room creator has 100 and everyone else 0"; rooms/v12 creators have
    infinite power (:data:`CREATOR_POWER_LEVEL`) whatever the power levels
    say.
    """
    if room_version.creators_have_infinite_power and user_id in get_room_creators(
        create_event, room_version
    ):
        return CREATOR_POWER_LEVEL
    if power_levels_event is None:
        if user_id in get_room_creators(create_event, room_version):
            return NO_POWER_LEVELS_CREATOR_LEVEL
        return DEFAULT_USERS_DEFAULT
    content = power_levels_event.content
    users_default = _level_or_default(
        content.get("users_default"), DEFAULT_USERS_DEFAULT, room_version
    )
    users = content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        return _level_or_default(users[user_id], users_default, room_version)
    return users_default


def get_named_level(
    power_levels_event: "Event | None", name: str, room_version: RoomVersion
) -> int:
    """One of the top-level levels ``users_default``, ``events_default``,
    ``state_default``, ``ban``, ``kick``, ``redact``, ``invite``, with its
    spec default (server-server-api "Definitions": invite 0; kick, ban,
    redact 50; client-server-api m.room.power_levels for the others)."""
    default = NAMED_LEVEL_DEFAULTS[name]
    return _level_or_default(_content(power_levels_event).get(name), default, room_version)


def get_send_level(
    event_type: str,
    state_key: str | None,
    power_levels_event: "Event | None",
    room_version: RoomVersion,
) -> int:
    """The *required power level* to send an event of ``event_type``.

    Spec: server-server-api "Definitions" (Required Power Level): the
    ``events`` entry for the type, else ``state_default`` for state events,
    else ``events_default``.

    Synapse uses ``state_default`` 50 even when there is no
    m.room.power_levels event, while client-server-api m.room.power_levels
    says 0 in that case; we follow Synapse so that rooms auth identically.
    """
    content = _content(power_levels_event)
    events = content.get("events")
    if isinstance(events, Mapping) and event_type in events:
        fallback = (
            get_named_level(power_levels_event, "state_default", room_version)
            if state_key is not None
            else get_named_level(power_levels_event, "events_default", room_version)
        )
        return _level_or_default(events[event_type], fallback, room_version)
    if state_key is not None:
        return get_named_level(power_levels_event, "state_default", room_version)
    return get_named_level(power_levels_event, "events_default", room_version)


def get_notification_level(
    power_levels_event: "Event | None", key: str, room_version: RoomVersion
) -> int:
    """The level needed to trigger the notification ``key`` (e.g. ``room``
    for ``@room``); client-server-api m.room.power_levels ``notifications``,
    default 50."""
    notifications = _content(power_levels_event).get("notifications")
    if isinstance(notifications, Mapping) and key in notifications:
        return _level_or_default(notifications[key], DEFAULT_NOTIFICATION_LEVEL, room_version)
    return DEFAULT_NOTIFICATION_LEVEL


def get_power_level_for_auth_state(
    user_id: str,
    auth_state: Mapping[tuple[str, str], "Event"],
    room_version: RoomVersion,
) -> PowerLevel:
    """:func:`get_user_power_level` reading the power levels and create events
    out of an auth state mapping ``(type, state_key) -> Event``. This is the
    "sender power level" state resolution sorts by."""
    return get_user_power_level(
        user_id,
        auth_state.get(("m.room.power_levels", "")),
        auth_state.get(("m.room.create", "")),
        room_version,
    )
