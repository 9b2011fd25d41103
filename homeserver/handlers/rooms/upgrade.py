"""Room upgrades: POST /rooms/{roomId}/upgrade (client-server-api "Room Upgrades").

The server checks the requester may send ``m.room.tombstone`` in the old
room, creates the replacement room (``predecessor`` and ``type`` in its
create event, the requested version, additional creators when the version
has them), copies the transferable state and the power levels, moves the
local aliases and the directory listing, sends the tombstone and restricts
the old room's power levels.

Every write goes through :class:`RoomCommands`, so each room's events are
created by the owner of its shard; the planning of the new room's state is
pure (functions below) and unit-tested on its own.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from homeserver.core import ids
from homeserver.core.events import Event, thaw
from homeserver.core.power_levels import get_room_creators, get_send_level, get_user_power_level
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.errors import Codes, MatrixError, bad_json, forbidden

#: State copied to the replacement room (spec's recommended list, minus power
#: levels which are handled on their own).
TRANSFERABLE_STATE = (
    "m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
    "m.room.guest_access", "m.room.history_visibility", "m.room.join_rules",
)

TOMBSTONE_BODY = "This room has been replaced"


def _level_values(content: Mapping[str, Any]) -> list[int]:
    """Every integer level a power levels content mentions."""
    levels = [v for k, v in content.items() if isinstance(v, int) and not isinstance(v, bool)]
    for key in ("events", "users"):
        sub = content.get(key)
        if isinstance(sub, Mapping):
            levels += [v for v in sub.values() if isinstance(v, int) and not isinstance(v, bool)]
    return levels


def plan_power_levels(
    old_content: Mapping[str, Any], requester: str, old_version: RoomVersion, old_creators: frozenset[str],
    new_version: RoomVersion, new_creators: frozenset[str],
) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """The power levels to create the new room with, and those to send once its state is copied (or None).

    The new room keeps the old power levels. In versions where creators have
    infinite power, creators may not be listed in ``users`` (rooms v12), so
    they are removed. Otherwise the requester is raised for the copy to the
    highest level the old content mentions (at least 100), then put back; a
    requester who was an infinitely powerful creator of the old room keeps
    100 in a version without that notion.
    """
    final = thaw(old_content)
    users = dict(final.get("users") or {}) if isinstance(final.get("users"), Mapping) else {}
    if new_version.creators_have_infinite_power:
        for creator in new_creators:
            users.pop(creator, None)
        final["users"] = users
        return final, None
    if old_version.creators_have_infinite_power and requester in old_creators:
        users[requester] = max(100, users.get(requester, 0) if isinstance(users.get(requester), int) else 0)
    final["users"] = users
    initial = dict(final)
    initial["users"] = {**users, requester: max([100, *_level_values(final)])}
    return initial, (final if initial != final else None)


def restricted_power_levels(old_content: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The old room's power levels with ``events_default`` and ``invite`` at least
    ``max(50, users_default + 1)``, or None when they already are."""
    users_default = old_content.get("users_default", 0)
    if not isinstance(users_default, int) or isinstance(users_default, bool):
        users_default = 0
    floor = max(50, users_default + 1)
    content = thaw(old_content)
    changed = False
    for key, default in (("events_default", 0), ("invite", 0)):
        current = content.get(key, default)
        if not isinstance(current, int) or isinstance(current, bool) or current < floor:
            content[key] = floor
            changed = True
    return content if changed else None


def canonical_alias_without(content: Mapping[str, Any], moved: set[str]) -> Optional[dict[str, Any]]:
    """An ``m.room.canonical_alias`` content with the ``moved`` aliases removed, or None if none were in it."""
    result = thaw(content)
    changed = False
    if result.get("alias") in moved:
        del result["alias"]
        changed = True
    alt = result.get("alt_aliases")
    if isinstance(alt, list):
        kept = [a for a in alt if a not in moved]
        if kept != alt:
            changed = True
            if kept:
                result["alt_aliases"] = kept
            else:
                del result["alt_aliases"]
    return result if changed else None


class RoomUpgrader:
    """Runs room upgrades through the room write commands.

    ``commands`` is the process's ``RoomCommands``; ``store`` the event
    store (current state reads); ``loader`` the ``EventLoader``;
    ``addresses`` has ``move_room_addresses(old_room_id, new_room_id) ->
    list[str]`` (moves local aliases and the directory listing, returns the
    aliases moved).
    """

    def __init__(self, commands: Any, store: Any, loader: Any, addresses: Any) -> None:
        self._commands = commands
        self._store = store
        self._loader = loader
        self._addresses = addresses

    async def upgrade(self, requester: Any, room_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Upgrade ``room_id`` as the spec's server behaviour says; ``{"replacement_room": id}``."""
        new_version_id = body.get("new_version")
        if not isinstance(new_version_id, str):
            raise bad_json("'new_version' must be a string")
        new_version = KNOWN_ROOM_VERSIONS.get(new_version_id)
        if new_version is None:
            raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Unsupported room version {new_version_id!r}")
        extra = body.get("additional_creators", [])
        if not isinstance(extra, list) or not all(isinstance(u, str) and ids.is_valid_user_id(u) for u in extra):
            raise bad_json("'additional_creators' must be a list of user IDs")
        user_id = requester.user_id
        additional = [u for u in dict.fromkeys(extra) if u != user_id] if new_version.additional_creators else []

        old_version = await self._loader.room_version(room_id) if room_id.startswith("!") else None
        if old_version is None:
            raise forbidden("You are not in this room")
        state_ids = await self._store.get_current_state_ids(room_id)
        member = await self._store.get_membership(room_id, user_id)
        if member is None or member.membership != "join":
            raise forbidden("You are not in this room")
        wanted = {k: v for k, v in state_ids.items()
                  if k[1] == "" and k[0] in (*TRANSFERABLE_STATE, "m.room.create", "m.room.power_levels", "m.room.canonical_alias")}
        events = await self._loader.get_events(room_id, list(wanted.values()))
        state: dict[str, Event] = {k[0]: events[v] for k, v in wanted.items() if v in events}
        create, pl = state.get("m.room.create"), state.get("m.room.power_levels")
        level = get_user_power_level(user_id, pl, create, old_version)
        if level < get_send_level("m.room.tombstone", "", pl, old_version):
            raise forbidden("You don't have permission to upgrade this room")

        # 2. The replacement room.
        creation: dict[str, Any] = {"predecessor": {"room_id": room_id}}
        if not new_version.room_id_is_create_event_hash:
            snapshot = await self._store.get_room_snapshot(room_id)
            if snapshot is not None and snapshot.extremities:
                creation["predecessor"]["event_id"] = snapshot.extremities[0]
        room_type = create.content.get("type") if create is not None else None
        if isinstance(room_type, str):
            creation["type"] = room_type
        if additional:
            creation["additional_creators"] = additional
        old_creators = get_room_creators(create, old_version)
        new_creators = frozenset([user_id, *additional]) if new_version.creators_have_infinite_power else frozenset([user_id])
        initial_pl, final_pl = plan_power_levels(
            pl.content if pl is not None else {}, user_id, old_version, old_creators, new_version, new_creators,
        )
        initial_state = [
            {"type": etype, "state_key": "", "content": thaw(state[etype].content)}
            for etype in TRANSFERABLE_STATE if etype in state
        ]
        created = await self._commands.create_room(requester, {
            "room_version": new_version.identifier,
            "preset": "private_chat",
            "creation_content": creation,
            "power_level_content_override": initial_pl,
            "initial_state": initial_state,
        })
        new_room_id = created["room_id"]
        if final_pl is not None:
            await self._commands.send_state(requester, new_room_id, "m.room.power_levels", "", final_pl)

        # 4. Local aliases (and the directory listing) follow the room.
        moved = set(await self._addresses.move_room_addresses(room_id, new_room_id))
        canonical = state.get("m.room.canonical_alias")
        if canonical is not None and canonical.content:
            await self._commands.send_state(requester, new_room_id, "m.room.canonical_alias", "", thaw(canonical.content))
            remaining = canonical_alias_without(canonical.content, moved)
            if remaining is not None:
                await self._commands.send_state(requester, room_id, "m.room.canonical_alias", "", remaining)

        # 5. The tombstone, then 6. the old room is quietened.
        await self._commands.send_state(requester, room_id, "m.room.tombstone", "",
                                        {"body": TOMBSTONE_BODY, "replacement_room": new_room_id})
        restricted = restricted_power_levels(pl.content) if pl is not None else None
        if restricted is not None:
            try:
                await self._commands.send_state(requester, room_id, "m.room.power_levels", "", restricted)
            except MatrixError:
                # Not allowed to change them (e.g. lacking the power levels
                # level): the spec says "if possible".
                pass
        return {"replacement_room": new_room_id}
