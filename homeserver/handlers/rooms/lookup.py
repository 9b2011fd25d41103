"""Room lookups: the event nearest a timestamp, and room summaries.

Spec: client-server-api "GET /rooms/{roomId}/timestamp_to_event" (v1.6) and
"GET /room_summary/{roomIdOrAlias}" (v1.15). Both are reads: they run on
any instance, from PostgreSQL, and reuse the room handler's access rules
(who may read a room, which events of it a user may see) so that they
reveal no more than /messages or /publicRooms would.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from homeserver.core.events import Event
from homeserver.errors import MatrixError, invalid_param, not_found
from homeserver.handlers.rooms.handler import RoomHandler

#: Candidate events read per query while looking for a visible one.
TIMESTAMP_BATCH = 100

#: Join rules under which anyone (even unauthenticated) may see a room's summary.
OPEN_JOIN_RULES = ("public", "knock", "knock_restricted")
#: Join rules whose ``allow`` list opens the summary to members of the listed rooms.
RESTRICTED_JOIN_RULES = ("restricted", "knock_restricted")

SUMMARY_STATE = (
    "m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias",
    "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.encryption",
)


def allowed_room_ids(join_rules: Optional[Mapping[str, Any]]) -> list[str]:
    """The rooms whose members may join a restricted room (``allow`` entries of type ``m.room_membership``)."""
    if not join_rules or join_rules.get("join_rule") not in RESTRICTED_JOIN_RULES:
        return []
    allow = join_rules.get("allow")
    if not isinstance(allow, list):
        return []
    return [
        entry["room_id"] for entry in allow
        if isinstance(entry, dict) and entry.get("type") == "m.room_membership" and isinstance(entry.get("room_id"), str)
    ]


def summary_from_state(room_id: str, version: str, state: Mapping[str, Event], num_joined: int) -> dict[str, Any]:
    """The summary object of a room from its current state events keyed by type (state key "")."""

    def content(etype: str) -> Mapping[str, Any]:
        event = state.get(etype)
        return event.content if event is not None else {}

    join_rule = content("m.room.join_rules").get("join_rule", "invite")
    visibility = content("m.room.history_visibility").get("history_visibility", "shared")
    summary: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": num_joined,
        "world_readable": visibility == "world_readable",
        "guest_can_join": content("m.room.guest_access").get("guest_access") == "can_join",
        "join_rule": join_rule if isinstance(join_rule, str) else "invite",
        "room_version": version,
    }
    for etype, key, target in (
        ("m.room.name", "name", "name"),
        ("m.room.topic", "topic", "topic"),
        ("m.room.avatar", "url", "avatar_url"),
        ("m.room.canonical_alias", "alias", "canonical_alias"),
        ("m.room.create", "type", "room_type"),
        ("m.room.encryption", "algorithm", "encryption"),
    ):
        value = content(etype).get(key)
        if isinstance(value, str) and value:
            summary[target] = value
    allowed = allowed_room_ids(content("m.room.join_rules"))
    if allowed:
        summary["allowed_room_ids"] = allowed
    return summary


class RoomLookupHandler:
    """timestamp_to_event and room summaries over a :class:`RoomHandler`'s rooms."""

    def __init__(self, rooms: RoomHandler, store: Any, lookup_store: Any) -> None:
        self._rooms = rooms
        self._store = store
        self._lookups = lookup_store

    async def timestamp_to_event(self, requester: Any, room_id: str, ts: int, direction: str) -> dict[str, Any]:
        """The visible event nearest ``ts`` (at or after it for ``f``, at or before for ``b``).

        403 for users who may not read the room (as /messages); 404
        ``M_NOT_FOUND`` when no visible event lies in that direction. Events
        after a departed member's leave are out of reach, like in /messages.
        """
        if direction not in ("f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        if not room_id.startswith("!"):
            raise invalid_param("Invalid room ID")
        forwards = direction == "f"
        # The room handler's read rule: joined users read the present, departed
        # ones up to their departure, anyone a world-readable room.
        _, cap = await self._rooms._access(requester.user_id, room_id)
        after: Optional[tuple[int, int]] = None
        while True:
            rows = await self._lookups.get_events_by_timestamp(room_id, ts, forwards, TIMESTAMP_BATCH, after)
            if not rows:
                break
            candidates = [r for r in rows if cap is None or r.stream_position <= cap]
            visible = await self._rooms._visible_rows(requester.user_id, room_id, candidates)
            if visible:
                # Rows come in scan order and filtering keeps it: the first is the nearest.
                found = visible[0]
                return {"event_id": found.event_id, "origin_server_ts": found.origin_server_ts}
            if len(rows) < TIMESTAMP_BATCH:
                break
            last = rows[-1]
            after = (last.origin_server_ts, last.stream_position)
        raise not_found(f"Unable to find event from {ts} in {'forward' if forwards else 'backward'} direction")

    async def room_summary(self, requester: Optional[Any], room_id_or_alias: str) -> dict[str, Any]:
        """The summary of a local room, with the requester's membership when authenticated.

        Visible when the room's join rule is public/knock/knock_restricted,
        its history is world readable, the requester is joined, invited or
        knocking, or (restricted rooms) the requester is joined to one of the
        rooms its join rule allows. Otherwise, and for unknown rooms or
        aliases, 404 ``M_NOT_FOUND``: the two are indistinguishable.
        """
        try:
            room_id = await self._rooms.resolve_room(room_id_or_alias)
        except MatrixError as e:
            if e.code == 404:
                raise not_found("Room not found")
            raise
        version = await self._rooms.loader.room_version(room_id)
        if version is None:
            raise not_found("Room not found")
        state_ids = await self._store.get_current_state_ids(room_id)
        wanted = {etype: state_ids[(etype, "")] for etype in SUMMARY_STATE if (etype, "") in state_ids}
        events = await self._rooms.loader.get_events(room_id, list(wanted.values()))
        state = {etype: events[eid] for etype, eid in wanted.items() if eid in events}
        members = await self._store.get_room_members(room_id)
        num_joined = sum(1 for m in members if m.membership == "join")
        summary = summary_from_state(room_id, version.identifier, state, num_joined)

        membership = None
        if requester is not None:
            row = next((m for m in members if m.user_id == requester.user_id), None)
            membership = row.membership if row is not None else None
        if not await self._may_see(requester, membership, summary):
            raise not_found("Room not found")
        if requester is not None:
            summary["membership"] = membership or "leave"
        return summary

    async def _may_see(self, requester: Optional[Any], membership: Optional[str], summary: Mapping[str, Any]) -> bool:
        if summary["join_rule"] in OPEN_JOIN_RULES or summary["world_readable"]:
            return True
        if requester is None:
            return False
        if membership in ("join", "invite", "knock"):
            return True
        for other in summary.get("allowed_room_ids", ()):
            row = await self._store.get_membership(other, requester.user_id)
            if row is not None and row.membership == "join":
                return True
        return False
