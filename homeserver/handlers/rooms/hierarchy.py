"""Space hierarchies: client ``GET /v1/rooms/{roomId}/hierarchy`` and federation ``GET /v1/hierarchy/{roomId}``.

Spec: client-server-api "Spaces" (data/api/client-server/space_hierarchy.yaml)
and server-server-api "Spaces" (data/api/server-server/space_hierarchy.yaml).

A space's children are its ``m.space.child`` state events with a non-empty
``via`` list, ordered by ``order`` (when valid), then the event's
``origin_server_ts``, then room ID. The client walk is depth first from the
requested room; a child this server is not in is described by one of the
``via`` servers over federation (:attr:`SpaceHierarchyHandler.remote_hierarchy`).
A room appears when the requester may see it (joined, invited, public,
knockable, world readable, or restricted to a room they are joined to).

Pagination is stateless: the ``from`` token records the walk's parameters and
how many visible rooms were already returned; the next page walks again and
skips them (bounded by :data:`MAX_ROOMS_WALKED`). The federation endpoint
does not paginate: the space and every child this server can describe,
split into those the requesting server may see and the rest.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

import attrs

from homeserver.core.events import Event, thaw
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.errors import Codes, MatrixError, forbidden, not_found
from homeserver.handlers.rooms.lookup import SUMMARY_STATE, summary_from_state

DEFAULT_LIMIT = 50
MAX_LIMIT = 50
MAX_DEPTH = 20
#: Rooms looked at per request, visible or not (a bound on the work of one page).
MAX_ROOMS_WALKED = 500
SPACE_CHILD = "m.space.child"

#: ``remote_hierarchy(servers, room_id, suggested_only)``: a federation /hierarchy answer, or None.
RemoteHierarchy = Callable[[Sequence[str], str, bool], Awaitable[Optional[Mapping[str, Any]]]]


def _invalid(msg: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def valid_order(value: Any) -> Optional[str]:
    """The ``order`` of an ``m.space.child`` if valid (≤ 50 printable ASCII characters), else None."""
    if not isinstance(value, str) or len(value) > 50 or any(not (0x20 <= ord(c) <= 0x7E) for c in value):
        return None
    return value


def child_vias(content: Mapping[str, Any]) -> list[str]:
    """The ``via`` servers of an ``m.space.child`` content (empty: not a valid child)."""
    via = content.get("via")
    if not isinstance(via, (list, tuple)):
        return []
    return [s for s in via if isinstance(s, str) and s]


def order_children(children: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Valid ``m.space.child`` stripped events (with ``origin_server_ts``) in the spec's order."""
    valid = [dict(c) for c in children
             if c.get("type") == SPACE_CHILD and isinstance(c.get("state_key"), str) and c["state_key"].startswith("!")
             and isinstance(c.get("content"), Mapping) and child_vias(c["content"])]

    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        order = valid_order(c["content"].get("order"))
        ts = c.get("origin_server_ts") if isinstance(c.get("origin_server_ts"), int) else 0
        return (order is None, order or "", ts, c["state_key"])

    return sorted(valid, key=key)


def encode_token(root: str, suggested_only: bool, max_depth: int, seen: int) -> str:
    raw = json.dumps([root, suggested_only, max_depth, seen], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str) -> tuple[str, bool, int, int]:
    """``(root, suggested_only, max_depth, seen)`` of a ``from`` token (400 M_INVALID_PARAM if malformed)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        root, suggested, depth, seen = json.loads(raw)
    except Exception:
        raise _invalid("Unknown pagination token")
    if (not isinstance(root, str) or not isinstance(suggested, bool) or not isinstance(depth, int)
            or not isinstance(seen, int) or seen < 0):
        raise _invalid("Unknown pagination token")
    return root, suggested, depth, seen


@attrs.frozen
class SpaceRoom:
    """What the walk knows of one room: its summary, its children and (local rooms) its members."""

    room_id: str
    summary: Mapping[str, Any]
    children: tuple[Mapping[str, Any], ...]
    #: ``(user_id, membership)`` of a room this server is in; None for a room described by another server.
    members: Optional[tuple[tuple[str, str], ...]] = None

    def chunk(self) -> dict[str, Any]:
        out = dict(self.summary)
        out["children_state"] = [dict(c) for c in self.children]
        return out

    def children_for(self, suggested_only: bool) -> list[Mapping[str, Any]]:
        return [c for c in self.children if not suggested_only or c["content"].get("suggested") is True]

    def servers_with(self, memberships: tuple[str, ...]) -> set[str]:
        return {u.split(":", 1)[1] for u, m in (self.members or ()) if m in memberships and ":" in u}


def _summary_from_remote(room_id: str, raw: Any) -> Optional[SpaceRoom]:
    """A remote server's summary of ``room_id`` (None when it is malformed or of another room)."""
    if not isinstance(raw, Mapping) or raw.get("room_id") != room_id:
        return None
    summary = {k: thaw(v) for k, v in raw.items() if k != "children_state"}
    if not isinstance(summary.get("num_joined_members"), int) or not isinstance(summary.get("world_readable"), bool) \
            or not isinstance(summary.get("guest_can_join"), bool):
        return None
    if not isinstance(summary.get("join_rule"), str):
        summary["join_rule"] = "public"  # the summary schema's default
    children_raw = raw.get("children_state")
    children = order_children([thaw(c) for c in children_raw if isinstance(c, Mapping)]
                              if isinstance(children_raw, list) else [])
    return SpaceRoom(room_id, summary, tuple(children))


class SpaceHierarchyHandler:
    """Walks spaces for clients and describes local spaces to other servers.

    ``rooms`` is the :class:`RoomHandler` (its loader), ``store`` the event store.
    """

    def __init__(self, server_name: str, rooms: Any, store: Any) -> None:
        self.server_name = server_name
        self._loader = rooms.loader
        self._store = store
        self.remote_hierarchy: Optional[RemoteHierarchy] = None

    # -- rooms --------------------------------------------------------------------

    async def local_room(self, room_id: str) -> Optional[SpaceRoom]:
        """The room as this server sees it, when a user of ours is joined (its state is then current)."""
        version = await self._loader.room_version(room_id)
        if version is None:
            return None
        members = await self._store.get_room_members(room_id)
        suffix = ":" + self.server_name
        if not any(m.membership == "join" and m.user_id.endswith(suffix) for m in members):
            return None
        state_ids = await self._store.get_current_state_ids(room_id)
        wanted = {k: e for k, e in state_ids.items() if (k[0] in SUMMARY_STATE and k[1] == "") or k[0] == SPACE_CHILD}
        events = await self._loader.get_events(room_id, list(wanted.values()))
        by_type: dict[str, Event] = {k[0]: events[e] for k, e in wanted.items() if k[0] != SPACE_CHILD and e in events}
        joined = sum(1 for m in members if m.membership == "join")
        summary = summary_from_state(room_id, version.identifier, by_type, joined)
        children = order_children([
            {"type": SPACE_CHILD, "state_key": events[e].state_key, "content": thaw(events[e].content),
             "sender": events[e].sender, "origin_server_ts": events[e].origin_server_ts}
            for k, e in wanted.items() if k[0] == SPACE_CHILD and e in events
        ])
        return SpaceRoom(room_id, summary, tuple(children), tuple((m.user_id, m.membership) for m in members))

    async def _membership(self, room_id: str, user_id: str) -> Optional[str]:
        row = await self._store.get_membership(room_id, user_id)
        return row.membership if row is not None else None

    @staticmethod
    def _open(room: SpaceRoom) -> bool:
        """Anyone may see it: public, knockable (in a version that knows knocking) or world readable."""
        rule = room.summary.get("join_rule")
        if room.summary.get("world_readable") is True or rule == "public":
            return True
        version = KNOWN_ROOM_VERSIONS.get(str(room.summary.get("room_version", "")))
        if rule == "knock":
            return version is None or version.knock_join_rule
        if rule == "knock_restricted":
            return version is None or version.knock_restricted_join_rule
        return False

    async def user_may_see(self, user_id: str, room: SpaceRoom) -> bool:
        """The client endpoint's rule (see the module docstring)."""
        if self._open(room):
            return True
        if await self._membership(room.room_id, user_id) in ("join", "invite"):
            return True
        if room.summary.get("join_rule") in ("restricted", "knock_restricted"):
            for allowed in room.summary.get("allowed_room_ids") or ():
                if isinstance(allowed, str) and await self._membership(allowed, user_id) == "join":
                    return True
        return False

    async def server_may_see(self, server: str, room: SpaceRoom) -> bool:
        """The federation endpoint's rule: what a user of ``server`` could peek or join."""
        if self._open(room):
            return True
        if server in room.servers_with(("join", "invite")):
            return True
        if room.summary.get("join_rule") in ("restricted", "knock_restricted"):
            for allowed in room.summary.get("allowed_room_ids") or ():
                other = await self.local_room(allowed) if isinstance(allowed, str) else None
                if other is not None and server in other.servers_with(("join",)):
                    return True
        return False

    # -- client ---------------------------------------------------------------------

    async def get_hierarchy(self, requester: Any, room_id: str, suggested_only: bool = False,
                            max_depth: Optional[int] = None, limit: Optional[int] = None,
                            from_token: Optional[str] = None) -> dict[str, Any]:
        """``GET /_matrix/client/v1/rooms/{roomId}/hierarchy``."""
        if not room_id.startswith("!"):
            raise _invalid("Invalid room ID")
        if limit is not None and limit < 1:
            raise _invalid("limit must be greater than zero")
        if max_depth is not None and max_depth < 0:
            raise _invalid("max_depth must not be negative")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        depth_cap = MAX_DEPTH if max_depth is None else min(max_depth, MAX_DEPTH)
        skip = 0
        if from_token is not None:
            root, suggested, token_depth, skip = decode_token(from_token)
            if root != room_id:
                raise _invalid("The pagination token is for another room")
            if suggested != suggested_only or token_depth != depth_cap:
                raise _invalid("suggested_only and max_depth cannot change on paginated requests")
        user_id = requester.user_id
        root_room = await self.local_room(room_id)
        if root_room is None:
            # Not a room we are in: the servers of the room ID may describe it.
            vias = [room_id.split(":", 1)[1]] if ":" in room_id else []
            root_room = await self._remote_room(room_id, vias, suggested_only, {})
        if root_room is None or not await self.user_may_see(user_id, root_room):
            raise forbidden("You are not allowed to view this room")

        cache: dict[str, Optional[SpaceRoom]] = {room_id: root_room}
        rooms: list[dict[str, Any]] = []
        visible = 0
        walked = 0
        stack: list[tuple[str, list[str], int]] = [(room_id, [], 0)]
        seen: set[str] = set()
        while stack and len(rooms) < limit and walked < MAX_ROOMS_WALKED:
            current, vias, depth = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            walked += 1
            room = await self._room(current, vias, suggested_only, cache)
            if room is None or not await self.user_may_see(user_id, room):
                continue
            visible += 1
            if visible > skip:
                rooms.append(room.chunk())
            if depth < depth_cap:
                for child in reversed(room.children_for(suggested_only)):
                    if child["state_key"] not in seen:
                        stack.append((child["state_key"], child_vias(child["content"]), depth + 1))
        result: dict[str, Any] = {"rooms": rooms}
        if any(rid not in seen for rid, _, _ in stack):
            result["next_batch"] = encode_token(room_id, suggested_only, depth_cap, visible)
        return result

    async def _room(self, room_id: str, vias: Sequence[str], suggested_only: bool,
                    cache: dict[str, Optional[SpaceRoom]]) -> Optional[SpaceRoom]:
        if room_id in cache:
            return cache[room_id]
        room = await self.local_room(room_id)
        if room is None:
            room = await self._remote_room(room_id, vias, suggested_only, cache)
        cache[room_id] = room
        return room

    async def _remote_room(self, room_id: str, vias: Sequence[str], suggested_only: bool,
                           cache: dict[str, Optional[SpaceRoom]]) -> Optional[SpaceRoom]:
        """Ask the ``via`` servers; their answer's children fill the walk's cache (inaccessible ones as None)."""
        servers = [s for s in dict.fromkeys(vias) if s != self.server_name]
        if self.remote_hierarchy is None or not servers:
            return None
        answer = await self.remote_hierarchy(servers, room_id, suggested_only)
        if not isinstance(answer, Mapping):
            return None
        room = _summary_from_remote(room_id, answer.get("room"))
        if room is None:
            return None
        for child_id in answer.get("inaccessible_children") or ():
            if isinstance(child_id, str):
                cache.setdefault(child_id, None)
        for raw in answer.get("children") or ():
            child_id = raw.get("room_id") if isinstance(raw, Mapping) else None
            # Only children described with their own children_state can stand in for a request of their own.
            if isinstance(child_id, str) and isinstance(raw.get("children_state"), list) and child_id not in cache:
                child = _summary_from_remote(child_id, raw)
                if child is not None:
                    cache[child_id] = child
        return room

    # -- federation ------------------------------------------------------------------------

    async def federation_hierarchy(self, origin: str, room_id: str, suggested_only: bool,
                                   acl_allows: Callable[[str, str], Awaitable[bool]]) -> dict[str, Any]:
        """``GET /_matrix/federation/v1/hierarchy/{roomId}``: 404 unless this server is in the room and
        ``origin`` may see it (and passes its ACL); children ``origin`` may not see are listed by ID."""
        root = await self.local_room(room_id)
        if root is None or not await acl_allows(origin, room_id) or not await self.server_may_see(origin, root):
            raise not_found("Unknown room")
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child in root.children_for(suggested_only):
            child_id = child["state_key"]
            room = await self.local_room(child_id)
            if room is None:
                continue
            if await acl_allows(origin, child_id) and await self.server_may_see(origin, room):
                children.append(room.chunk())
            else:
                inaccessible.append(child_id)
        return {"room": root.chunk(), "children": children, "inaccessible_children": inaccessible}
