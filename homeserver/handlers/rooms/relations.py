"""Relations (edits, threads, references, reactions) and their bundled aggregations.

* ``GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``
  pages through the children of an event in topological order;
* ``GET /rooms/{roomId}/threads`` lists thread roots by latest activity;
* :meth:`RelationsHandler.bundle` adds ``unsigned.m.relations`` to client
  events: the latest valid ``m.replace``, the ``m.thread`` summary and the
  ``m.reference`` chunk (annotations are not bundled, per the spec).

:mod:`homeserver.handlers.rooms.served` wraps the room and sync handlers so
every event they serve (``/event``, ``/messages``, ``/context``, ``/sync``
timelines) carries its aggregations, without those handlers knowing about
relations.

The access rules are the room handler's: a user sees the relations of an
event they may see, and only the children they may see.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Optional

from homeserver.core.relations import relation_of
from homeserver.errors import Codes, MatrixError, invalid_param
from homeserver.handlers.paging import decode_counter, encode_counter
from homeserver.handlers.rooms.handler import txn_key_for
from homeserver.handlers.rooms.tokens import TopoToken

DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
#: Relation types aggregated into ``unsigned.m.relations``.
BUNDLED_TYPES = ("m.replace", "m.reference")
#: How deep ``recurse=true`` follows relations of relations.
MAX_RECURSION_DEPTH = 3
MAX_LIMIT = 1000


def _relates_to(event: dict[str, Any]) -> Optional[dict[str, Any]]:
    relates = event.get("content", {}).get("m.relates_to")
    return relates if isinstance(relates, dict) else None


def choose_replacement(original: dict[str, Any], candidates: Iterable[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The most recent valid ``m.replace`` of ``original`` among client events ``candidates``.

    Valid (spec, "Validity of replacement events"): same sender and type as
    the original, neither is a state event, the replacement has an object
    ``m.new_content`` (inside the ciphertext, so not checked, for
    ``m.room.encrypted``), and the original is not itself a replacement. Most
    recent: highest ``origin_server_ts``, then lexicographically largest
    event ID.
    """
    if "state_key" in original:
        return None
    own = _relates_to(original)
    if own is not None and own.get("rel_type") == "m.replace":
        return None
    best = None
    for c in candidates:
        if c.get("sender") != original.get("sender") or c.get("type") != original.get("type") or "state_key" in c:
            continue
        if c.get("type") != "m.room.encrypted" and not isinstance(c.get("content", {}).get("m.new_content"), dict):
            continue
        if best is None or (c["origin_server_ts"], c["event_id"]) > (best["origin_server_ts"], best["event_id"]):
            best = c
    return best


class RelationsHandler:
    """Relations reads and aggregations. ``rooms`` is the :class:`RoomHandler` (access rules),
    ``store`` a :class:`storage.stores.relations.RelationStore`, ``events_store`` the event store;
    ``ignored(user_id)`` (optional) gives the senders a user ignores, left out of ``/relations``."""

    def __init__(self, rooms: Any, store: Any, events_store: Any,
                 ignored: Optional[Callable[[str], Awaitable[frozenset[str]]]] = None) -> None:
        self._rooms = rooms
        self._store = store
        self._events = events_store
        self._loader = rooms.loader
        self._ignored = ignored

    async def _readable(self, user_id: str, room_id: str, rows: list[Any], cap: Optional[int]) -> list[Any]:
        if cap is not None:
            rows = [r for r in rows if r.stream_position <= cap]
        # The room handler's visibility rules (history visibility, membership over time).
        return await self._rooms._visible_rows(user_id, room_id, rows)

    async def relations(
        self,
        requester: Any,
        room_id: str,
        event_id: str,
        rel_type: Optional[str],
        event_type: Optional[str],
        from_token: Optional[str],
        to_token: Optional[str],
        direction: str,
        limit: Optional[int],
        recurse: bool,
    ) -> dict[str, Any]:
        """GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]."""
        if direction not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        backwards = direction == "b"
        # 404 when the parent is unknown or not visible to the requester.
        await self._rooms.get_event(requester, room_id, event_id)
        _, cap = await self._rooms._access(requester.user_id, room_id)
        limit = max(0, min(5 if limit is None else limit, MAX_LIMIT))
        start = await self._rooms._point(room_id, from_token, backwards) if from_token is not None else None
        end = await self._rooms._point(room_id, to_token, not backwards) if to_token is not None else None
        bound_start = (start.depth, start.position) if start is not None else None
        bound_end = (end.depth, end.position) if end is not None else None
        rows, more = await self._store.get_children(
            room_id, event_id, rel_type=rel_type, event_type=event_type,
            before=bound_start if backwards else bound_end, after=bound_end if backwards else bound_start,
            backwards=backwards, limit=limit, max_depth=MAX_RECURSION_DEPTH if recurse else 1,
        )
        stored = await self._events.get_events(room_id, [r.event_id for r in rows])
        ordered = [stored[r.event_id] for r in rows if r.event_id in stored]
        visible = await self._readable(requester.user_id, room_id, ordered, cap)
        if self._ignored is not None:
            ignored = await self._ignored(requester.user_id)
            visible = [r for r in visible if r.state_key is not None or r.sender not in ignored]
        chunk = await self._loader.serialize_rows(room_id, visible)
        await self.bundle(requester.user_id, room_id, chunk)
        result: dict[str, Any] = {"chunk": chunk}
        if more and rows:
            result["next_batch"] = TopoToken(rows[-1].depth, rows[-1].stream_position).encode()
        if from_token is not None:
            result["prev_batch"] = from_token
        if recurse:
            result["recursion_depth"] = MAX_RECURSION_DEPTH
        return result

    async def threads(self, requester: Any, room_id: str, include: str, from_token: Optional[str],
                      limit: Optional[int]) -> dict[str, Any]:
        """GET /rooms/{roomId}/threads: thread roots, most recently active first."""
        if include not in ("all", "participated"):
            raise invalid_param("include must be 'all' or 'participated'")
        before = None
        if from_token is not None:
            before = decode_counter("th", from_token, "from token")
        limit = max(1, min(50 if limit is None else limit, MAX_LIMIT))
        # 403 when the user cannot view the room (also for unknown rooms).
        _, cap = await self._rooms._access(requester.user_id, room_id)
        participant = requester.user_id if include == "participated" else None
        roots, more = await self._store.get_threads(room_id, participant, before, limit)
        stored = await self._events.get_events(room_id, [r for r, _ in roots])
        ordered = [stored[r] for r, _ in roots if r in stored]
        visible = await self._readable(requester.user_id, room_id, ordered, cap)
        chunk = await self._loader.serialize_rows(room_id, visible)
        await self.bundle(requester.user_id, room_id, chunk)
        result: dict[str, Any] = {"chunk": chunk}
        if more and roots:
            result["next_batch"] = encode_counter("th", roots[-1][1])
        return result

    async def check_new_relation(self, requester: Any, room_id: str, event_type: str, content: Any,
                                 txn_id: Optional[str]) -> None:
        """Refuse relations the spec says servers should refuse at send time (a retried client
        transaction passes: the room handler returns its original event):

        * a second annotation with the same type and key on one event (400 ``M_DUPLICATE_ANNOTATION``);
        * a thread started off an event that itself relates to another (400 ``M_UNKNOWN``).
        """
        if not isinstance(content, dict):
            return
        relation = relation_of(content)
        if relation is None or relation[0] not in ("m.annotation", "m.thread"):
            return
        rel_type, parent_id, key = relation
        membership = await self._events.get_membership(room_id, requester.user_id)
        if membership is None or membership.membership != "join":
            return  # the room handler refuses non-members without telling them about the room's events
        if txn_id is not None and await self._events.get_txn_event(txn_key_for(requester, room_id, txn_id)):
            return
        if rel_type == "m.annotation":
            if key is not None and await self._store.has_annotation(room_id, parent_id, requester.user_id, event_type, key):
                raise MatrixError(400, DUPLICATE_ANNOTATION, "You already sent this annotation")
            return
        parent = (await self._loader.get_events(room_id, [parent_id])).get(parent_id)
        if parent is not None and relation_of(parent.content) is not None:
            raise MatrixError(400, Codes.UNKNOWN, "Cannot start a thread from an event that relates to another")

    async def bundle(self, user_id: str, room_id: str, events: list[dict[str, Any]], threads: bool = True) -> None:
        """Add ``unsigned.m.relations`` to the client events ``events`` of one room (in place)."""
        await self.bundle_rooms(user_id, {room_id: events}, threads)

    async def bundle_rooms(self, user_id: str, events_by_room: dict[str, list[dict[str, Any]]],
                           threads: bool = True, ignored: Optional[frozenset[str]] = None) -> None:
        """Add ``unsigned.m.relations`` to client events of several rooms (in place).

        One query finds every relation and thread summary needed; events are
        then read only for rooms that have edits or threads. ``ignored``: the
        users ``user_id`` ignores, when the caller has read them already.
        """
        parents: dict[tuple[str, str], dict[str, Any]] = {}
        for room_id, events in events_by_room.items():
            for e in events:
                if "event_id" in e and "redacted_because" not in e.get("unsigned", {}):
                    parents[(room_id, e["event_id"])] = e
        if not parents:
            return
        if not threads:
            ignored = frozenset()
        elif ignored is None:
            ignored = await self._ignored(user_id) if self._ignored is not None else frozenset()
        rows, summaries = await self._store.get_bundle_rows(
            list(parents), BUNDLED_TYPES, user_id if threads else None, sorted(ignored))
        if not rows and not summaries:
            return
        wanted: dict[str, list[str]] = {}
        for r in rows:
            if r.relation_type == "m.replace":
                wanted.setdefault(r.room_id, []).append(r.event_id)
        for (room_id, _), summary in summaries.items():
            wanted.setdefault(room_id, []).append(summary.latest_event_id)
        serialized: dict[str, dict[str, Any]] = {}
        latest_by_room: dict[str, list[dict[str, Any]]] = {}
        for room_id, event_ids in wanted.items():
            stored = await self._events.get_events(room_id, event_ids)
            for e in await self._loader.serialize_rows(room_id, list(stored.values())):
                serialized[e["event_id"]] = e
        for (room_id, _), summary in summaries.items():
            if summary.latest_event_id in serialized:
                latest_by_room.setdefault(room_id, []).append(serialized[summary.latest_event_id])
        if latest_by_room:
            await self.bundle_rooms(user_id, latest_by_room, threads=False)
        by_parent: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            by_parent.setdefault((r.room_id, r.relates_to_id), []).append(r)
        for key, event in parents.items():
            children = by_parent.get(key, [])
            agg: dict[str, Any] = {}
            edits = [serialized[r.event_id] for r in children
                     if r.relation_type == "m.replace" and r.event_id in serialized]
            edit = choose_replacement(event, edits)
            if edit is not None:
                agg["m.replace"] = edit
            summary = summaries.get(key)
            if summary is not None and summary.latest_event_id in serialized:
                agg["m.thread"] = {
                    "latest_event": serialized[summary.latest_event_id],
                    "count": summary.count,
                    "current_user_participated": summary.participated or event.get("sender") == user_id,
                }
            references = [{"event_id": r.event_id} for r in children if r.relation_type == "m.reference"]
            if references:
                agg["m.reference"] = {"chunk": references}
            if agg:
                event.setdefault("unsigned", {}).setdefault("m.relations", {}).update(agg)

    async def bundle_sync(self, user_id: str, response: dict[str, Any], ignored: Optional[frozenset[str]] = None) -> None:
        """Bundle aggregations into the timelines of a /sync response (in place;
        ``ignored`` as for :meth:`bundle_rooms`)."""
        rooms = response.get("rooms", {})
        by_room: dict[str, list[dict[str, Any]]] = {}
        for section in ("join", "leave"):
            for room_id, room in rooms.get(section, {}).items():
                events = room.get("timeline", {}).get("events", [])
                if events:
                    by_room[room_id] = events
        await self.bundle_rooms(user_id, by_room, ignored=ignored)
