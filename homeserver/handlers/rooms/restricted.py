"""Restricted joins: who may authorise a join under a ``restricted`` join rule.

Spec: client-server-api "Restricted rooms", server-server-api "Restricted
rooms", rooms/v8 auth rule 4.3.2/4.3.3. A user who is neither invited nor
joined may join a room whose join rule is ``restricted`` (or, v10+,
``knock_restricted``) when they are joined to one of the rooms listed in the
rule's ``allow`` conditions; the join event must then name, in
``join_authorised_via_users_server``, a joined member with the power to
invite, and carry the signature of that member's server.

:func:`choose_authoriser` is the one decision both paths use: a local user
joining a local room (``RoomHandler.join``) and a remote server asking this
one for a join template or submitting the signed join (``make_join`` /
``send_join``). It only answers for this server: the authoriser it picks is
one of our users, and a condition can only be checked for an allowed room
this server is in.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Optional

from homeserver.core.events import Event
from homeserver.core.power_levels import get_named_level, get_user_power_level
from homeserver.core.room_versions import RoomVersion
from homeserver.errors import Codes, MatrixError, forbidden

StateKey = tuple[str, str]
#: ``membership_of(room_id, user_id)``: the user's current membership in a room as this server sees it, or None.
MembershipLookup = Callable[[str, str], Awaitable[Optional[str]]]
#: ``server_in_room(room_id)``: whether this server has a joined member in the room (its view is current).
ServerInRoom = Callable[[str], Awaitable[bool]]

AUTHORISING_USER = "join_authorised_via_users_server"


def restricted_rules(version: RoomVersion) -> frozenset[str]:
    """The join rules of ``version`` that admit members of allowed rooms."""
    rules = set()
    if version.restricted_join_rule:
        rules.add("restricted")
    if version.knock_restricted_join_rule:
        rules.add("knock_restricted")
    return frozenset(rules)


def allow_rooms(join_rules_content: Mapping[str, Any]) -> list[str]:
    """The room IDs of the well-formed ``m.room_membership`` conditions (others are ignored, as the spec says)."""
    allow = join_rules_content.get("allow")
    if not isinstance(allow, (list, tuple)):
        return []
    return [
        c["room_id"] for c in allow
        if isinstance(c, Mapping) and c.get("type") == "m.room_membership" and isinstance(c.get("room_id"), str)
    ]


def unable_to_authorise(msg: str) -> MatrixError:
    """400 ``M_UNABLE_TO_AUTHORISE_JOIN``: this server cannot check any condition."""
    return MatrixError(400, Codes.UNABLE_TO_AUTHORISE_JOIN, msg)


def unable_to_grant(msg: str) -> MatrixError:
    """400 ``M_UNABLE_TO_GRANT_JOIN``: the user qualifies but no user here can authorise: try another server."""
    return MatrixError(400, Codes.UNABLE_TO_GRANT_JOIN, msg)


def needs_authoriser(version: RoomVersion, state: Mapping[StateKey, Event], user_id: str) -> bool:
    """Whether a join of ``user_id`` under ``state`` must be authorised by a member (restricted rule, not invited/joined)."""
    join_rules = state.get(("m.room.join_rules", ""))
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    if rule not in restricted_rules(version):
        return False
    member = state.get(("m.room.member", user_id))
    return not (member is not None and member.membership in ("invite", "join"))


async def user_satisfies_conditions(
    state: Mapping[StateKey, Event], user_id: str, membership_of: MembershipLookup, server_in_room: ServerInRoom
) -> None:
    """Return when ``user_id`` is joined to one of the allowed rooms; otherwise raise
    ``M_UNABLE_TO_AUTHORISE_JOIN`` when some allowed room is unknown here (it may
    qualify there), else 403 ``M_FORBIDDEN``."""
    join_rules = state.get(("m.room.join_rules", ""))
    rooms = allow_rooms(join_rules.content if join_rules is not None else {})
    unknown = []
    for room_id in rooms:
        if not await server_in_room(room_id):
            unknown.append(room_id)
            continue
        if await membership_of(room_id, user_id) == "join":
            return
    if unknown:
        raise unable_to_authorise(f"This server is not in {', '.join(unknown)}, so it cannot check the join conditions")
    raise forbidden(f"{user_id} is not joined to any room the join rule allows")


def local_authorisers(version: RoomVersion, state: Mapping[StateKey, Event], server_name: str) -> list[str]:
    """This server's joined members of the room able to invite, most powerful first."""
    create = state.get(("m.room.create", ""))
    pl = state.get(("m.room.power_levels", ""))
    invite_level = get_named_level(pl, "invite", version)
    suffix = ":" + server_name
    found = []
    for (etype, key), event in state.items():
        if etype != "m.room.member" or not key.endswith(suffix) or event.membership != "join":
            continue
        level = get_user_power_level(key, pl, create, version)
        if level >= invite_level:
            found.append((-level, key))
    return [user for _, user in sorted(found)]


async def choose_authoriser(
    version: RoomVersion,
    state: Mapping[StateKey, Event],
    user_id: str,
    server_name: str,
    membership_of: MembershipLookup,
    server_in_room: ServerInRoom,
) -> Optional[str]:
    """The local user to name in ``join_authorised_via_users_server`` for ``user_id``'s join,
    or None when the join needs none (the rule is not restricted, or the user is invited or joined).

    Raises 403 (the user meets no condition), ``M_UNABLE_TO_AUTHORISE_JOIN``
    (no allowed room is known here) or ``M_UNABLE_TO_GRANT_JOIN`` (no local
    member may invite).
    """
    if not needs_authoriser(version, state, user_id):
        return None
    await user_satisfies_conditions(state, user_id, membership_of, server_in_room)
    candidates = local_authorisers(version, state, server_name)
    if not candidates:
        raise unable_to_grant(f"No user of {server_name} in the room has the power to invite")
    return candidates[0]
