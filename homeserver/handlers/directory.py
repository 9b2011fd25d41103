"""Room aliases, canonical alias validation and the published room directory.

Aliases are local only until federation exists: a remote alias resolves
to 404 and a remote ``server`` for ``/publicRooms`` is unknown (404).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from homeserver.core import ids
from homeserver.core.power_levels import get_send_level, get_user_power_level
from homeserver.core.rooms import AliasInUseError
from homeserver.errors import Codes, MatrixError, bad_json, forbidden, invalid_param, not_found
from homeserver.handlers.paging import decode_counter, encode_counter

BAD_ALIAS = "M_BAD_ALIAS"
DEFAULT_PUBLIC_ROOMS_LIMIT = 100
MAX_PUBLIC_ROOMS_LIMIT = 500


def parse_alias(alias: str) -> ids.RoomAlias:
    """A room alias, or 400 ``M_INVALID_PARAM``."""
    try:
        return ids.RoomAlias.parse(alias)
    except ValueError:
        raise invalid_param("Room alias invalid")


def directory_entry(room: Any) -> dict[str, Any]:
    """The ``PublishedRoomsChunk`` of a ``storage.stores.directory.PublishedRoom`` (pure)."""
    entry: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.joined_members,
        "world_readable": room.history_visibility == "world_readable",
        "guest_can_join": room.guest_access == "can_join",
    }
    for field in ("name", "topic", "canonical_alias", "avatar_url", "join_rule", "room_type"):
        value = getattr(room, field)
        if isinstance(value, str) and value:
            entry[field] = value
    return entry


class DirectoryHandler:
    """Aliases and the room directory. ``rooms`` is the RoomHandler (its loader and access rules),
    ``events_store`` the event store, ``store`` a :class:`storage.stores.directory.DirectoryStore`."""

    def __init__(self, server_name: str, rooms: Any, events_store: Any, store: Any) -> None:
        self.server_name = server_name
        self._rooms = rooms
        self._events = events_store
        self._store = store
        self._loader = rooms.loader

    def _local(self, alias: str) -> ids.RoomAlias:
        parsed = parse_alias(alias)
        if parsed.domain != self.server_name:
            raise invalid_param("Room alias must be on this server")
        return parsed

    async def _joined_with_power(self, user_id: str, room_id: str, event_type: str) -> bool:
        """Whether ``user_id`` is joined to the room and may send the state event ``event_type``."""
        version = await self._loader.room_version(room_id)
        if version is None:
            return False
        state = await self._events.get_current_state_ids(room_id)
        wanted = {k: state[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", user_id))
                  if k in state}
        events = await self._loader.state_events(room_id, wanted)
        member = events.get(("m.room.member", user_id))
        if member is None or member.membership != "join":
            return False
        pl, create = events.get(("m.room.power_levels", "")), events.get(("m.room.create", ""))
        return get_user_power_level(user_id, pl, create, version) >= get_send_level(event_type, "", pl, version)

    # -- aliases -----------------------------------------------------------------

    async def create_alias(self, requester: Any, alias: str, body: Mapping[str, Any]) -> None:
        """PUT /directory/room/{roomAlias}: the requester must be joined to the room."""
        self._local(alias)
        room_id = body.get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise bad_json("'room_id' must be a room ID")
        if await self._loader.room_version(room_id) is None:
            raise not_found("Room not found")
        if not requester.is_admin:
            membership = await self._events.get_membership(room_id, requester.user_id)
            if membership is None or membership.membership != "join":
                raise forbidden("You must be in the room to create an alias for it")
        try:
            await self._events.create_alias(alias, room_id, requester.user_id)
        except AliasInUseError:
            raise MatrixError(409, Codes.UNKNOWN, f"Room alias {alias} already exists.")

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        """GET /directory/room/{roomAlias}."""
        parsed = parse_alias(alias)
        if parsed.domain != self.server_name and self._rooms.remote_alias is not None:
            room_id, servers = await self._rooms.remote_alias(alias)
            return {"room_id": room_id, "servers": servers}
        record = await self._store.get_alias_record(alias) if parsed.domain == self.server_name else None
        if record is None:
            raise not_found(f"Room alias {alias} not found.")
        return {"room_id": record.room_id, "servers": [self.server_name]}

    async def delete_alias(self, requester: Any, alias: str) -> None:
        """DELETE /directory/room/{roomAlias}: by its creator, a server admin, or a user with
        the power to change the room's canonical alias. A canonical alias event naming it is
        updated (best effort, as the requester)."""
        self._local(alias)
        record = await self._store.get_alias_record(alias)
        if record is None:
            raise not_found(f"Room alias {alias} not found.")
        user_id = requester.user_id
        allowed = requester.is_admin or record.creator == user_id or await self._joined_with_power(
            user_id, record.room_id, "m.room.canonical_alias")
        if not allowed:
            raise forbidden("You don't have permission to delete the alias.")
        if not await self._store.delete_alias(alias, record.room_id):
            raise not_found(f"Room alias {alias} not found.")
        await self._drop_from_canonical(requester, record.room_id, alias)

    async def _drop_from_canonical(self, requester: Any, room_id: str, alias: str) -> None:
        state = await self._events.get_current_state_ids(room_id)
        key = ("m.room.canonical_alias", "")
        if key not in state:
            return
        event = (await self._loader.state_events(room_id, {key: state[key]})).get(key)
        if event is None:
            return
        content = dict(event.content)
        alt = content.get("alt_aliases")
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        if isinstance(alt, (list, tuple)) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if not changed:
            return
        try:
            await self._rooms.send_state(requester, room_id, "m.room.canonical_alias", "", content)
        except MatrixError:
            # The requester may not be in the room (the alias creator or an admin):
            # the alias is gone either way, the stale canonical alias stays.
            pass

    async def room_aliases(self, requester: Any, room_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/aliases: for users who may read the room."""
        await self._rooms._access(requester.user_id, room_id)
        return {"aliases": await self._store.get_aliases_for_room(room_id)}

    async def check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """Refuse an ``m.room.canonical_alias`` content whose aliases do not map to ``room_id``.

        400 ``M_INVALID_PARAM`` for malformed aliases, 400 ``M_BAD_ALIAS`` for
        aliases that are unknown, point elsewhere or are remote (which cannot
        be checked without federation).
        """
        aliases = []
        if "alias" in content and content["alias"] is not None:
            if not isinstance(content["alias"], str):
                raise invalid_param("'alias' must be a string")
            aliases.append(content["alias"])
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, (list, tuple)) or not all(isinstance(a, str) for a in alt):
                raise invalid_param("'alt_aliases' must be a list of strings")
            aliases.extend(alt)
        for alias in aliases:
            parsed = parse_alias(alias)
            record = await self._store.get_alias_record(alias) if parsed.domain == self.server_name else None
            if record is None or record.room_id != room_id:
                raise MatrixError(400, BAD_ALIAS, f"Room alias {alias} does not point to this room")

    async def check_canonical_alias_send(self, user_id: str, room_id: str, content: Mapping[str, Any]) -> None:
        """:meth:`check_canonical_alias` for a member about to send it; unknown rooms and
        non-members are left to the room handler's own refusal."""
        membership = await self._events.get_membership(room_id, user_id)
        if membership is not None and membership.membership == "join":
            await self.check_canonical_alias(room_id, content)

    # -- published room directory ------------------------------------------------------

    async def get_visibility(self, room_id: str) -> dict[str, Any]:
        """GET /directory/list/room/{roomId}."""
        public = await self._store.is_room_public(room_id)
        if public is None:
            raise not_found("Room not found")
        return {"visibility": "public" if public else "private"}

    async def set_visibility(self, requester: Any, room_id: str, visibility: Any) -> None:
        """PUT /directory/list/room/{roomId}: joined users with power over the canonical alias, or admins."""
        if visibility not in ("public", "private"):
            raise bad_json("'visibility' must be 'public' or 'private'")
        if await self._store.is_room_public(room_id) is None:
            raise not_found("Room not found")
        if not requester.is_admin and not await self._joined_with_power(
                requester.user_id, room_id, "m.room.canonical_alias"):
            raise forbidden("You don't have permission to change the room's directory visibility")
        await self._store.set_room_public(room_id, visibility == "public")

    async def public_rooms(self, server: Optional[str], limit: Optional[int], since: Optional[str],
                           search_filter: Any = None, third_party_instance_id: Any = None) -> dict[str, Any]:
        """GET/POST /publicRooms on this server, largest rooms first.

        There are no third-party networks (bridges) here: asking for one
        lists nothing.
        """
        if third_party_instance_id is not None and not isinstance(third_party_instance_id, str):
            raise bad_json("'third_party_instance_id' must be a string")
        if server is not None and server != self.server_name:
            raise not_found(f"Unknown server {server} (federation is not available)")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise bad_json("'limit' must be a non-negative integer")
        limit = DEFAULT_PUBLIC_ROOMS_LIMIT if not limit else min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        offset = 0
        if since is not None:
            offset = decode_counter("p", since, "'since' token")
        term, room_types = None, None
        if search_filter is not None:
            if not isinstance(search_filter, dict):
                raise bad_json("'filter' must be an object")
            term = search_filter.get("generic_search_term")
            if term is not None and not isinstance(term, str):
                raise bad_json("'generic_search_term' must be a string")
            room_types = search_filter.get("room_types")
            if room_types is not None and (not isinstance(room_types, list)
                                           or not all(t is None or isinstance(t, str) for t in room_types)):
                raise bad_json("'room_types' must be a list of strings or nulls")
        if third_party_instance_id is not None:
            rooms, total = [], 0
        else:
            rooms, total = await self._store.get_published_rooms(term, room_types, offset, limit)
        result: dict[str, Any] = {"chunk": [directory_entry(r) for r in rooms], "total_room_count_estimate": total}
        if offset + limit < total:
            result["next_batch"] = encode_counter("p", offset + limit)
        if offset > 0:
            result["prev_batch"] = encode_counter("p", max(0, offset - limit))
        return result
