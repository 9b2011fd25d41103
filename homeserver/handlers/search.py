"""Server-side search over room events and the user directory.

Room event search uses the ``event_search`` full-text index (PostgreSQL
``websearch_to_tsquery`` syntax for the search term) over the rooms the
user is joined to, then applies the room handler's history visibility and
the request's ``RoomEventFilter`` to each hit. ``next_batch`` is an offset
into the raw hits, so pages never skip or repeat a hit that stayed visible.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from homeserver.core import ids
from homeserver.errors import bad_json, invalid_param, missing_param, not_found
from homeserver.handlers.paging import decode_counter, encode_counter
from homeserver.handlers.rooms.filters import EventFilter
from homeserver.handlers.rooms.tokens import TopoToken

SEARCH_KEYS = ("content.body", "content.name", "content.topic")
DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 100
#: How many raw batches one request may scan to fill a page of visible hits.
MAX_SCAN_BATCHES = 10
MAX_CONTEXT = 20
DEFAULT_USER_SEARCH_LIMIT = 10
MAX_USER_SEARCH_LIMIT = 50

_WORD = re.compile(r"\w+", re.UNICODE)
_OPERATORS = frozenset({"or", "and", "not"})


def highlight_terms(term: str) -> list[str]:
    """The words of a search term clients should highlight (operators and excluded words dropped)."""
    words = []
    for token in term.split():
        if token.startswith("-"):
            continue
        for word in _WORD.findall(token.lower()):
            if word not in _OPERATORS and word not in words:
                words.append(word)
    return words


def _int_in(body: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_json(f"'{key}' must be a non-negative integer")
    return min(value, maximum)


class SearchHandler:
    """POST /search. ``rooms`` is the RoomHandler, ``relations`` the RelationsHandler (bundles),
    ``store`` a RelationStore (the search index), ``events_store`` the event store."""

    def __init__(self, rooms: Any, relations: Any, store: Any, events_store: Any) -> None:
        self._rooms = rooms
        self._relations = relations
        self._store = store
        self._events = events_store
        self._loader = rooms.loader

    async def search(self, requester: Any, body: Mapping[str, Any], next_batch: Optional[str]) -> dict[str, Any]:
        """One search request (only the ``room_events`` category exists)."""
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise bad_json("'search_categories' must be an object")
        criteria = categories.get("room_events")
        if criteria is None:
            return {"search_categories": {}}
        if not isinstance(criteria, dict):
            raise bad_json("'room_events' must be an object")
        term = criteria.get("search_term")
        if term is None:
            raise missing_param("search_term")
        if not isinstance(term, str):
            raise bad_json("'search_term' must be a string")
        keys = criteria.get("keys", list(SEARCH_KEYS))
        if not isinstance(keys, list) or not keys or any(k not in SEARCH_KEYS for k in keys):
            raise bad_json(f"'keys' must be a non-empty list of {', '.join(SEARCH_KEYS)}")
        order_by = criteria.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise bad_json("'order_by' must be 'rank' or 'recent'")
        event_filter = EventFilter.parse(criteria.get("filter"), "filter")
        context = criteria.get("event_context")
        if context is not None and not isinstance(context, dict):
            raise bad_json("'event_context' must be an object")
        include_state = criteria.get("include_state", False)
        if not isinstance(include_state, bool):
            raise bad_json("'include_state' must be a boolean")
        offset = 0
        if next_batch is not None:
            offset = decode_counter("s", next_batch, "next_batch token")
        limit = min(event_filter.limit or DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT)

        room_ids = [r for r in await self._rooms.joined_rooms(requester) if event_filter.allows_room(r)]
        results: list[tuple[float, dict[str, Any], Any]] = []
        count = 0
        exhausted = False
        for _ in range(MAX_SCAN_BATCHES):
            hits, count = await self._store.search(room_ids, term, keys, order_by == "rank", offset, limit)
            if not hits:
                exhausted = True
                break
            used = 0
            for hit, (event, row) in zip(hits, await self._load_visible(requester.user_id, hits)):
                used += 1
                if event is not None and event_filter.allows(event):
                    results.append((hit.rank, event, row))
                    if len(results) >= limit:
                        break
            offset += used
            if len(results) >= limit:
                break
            if len(hits) < limit:
                exhausted = True
                break
        by_room: dict[str, list[dict[str, Any]]] = {}
        for _, event, _ in results:
            by_room.setdefault(event["room_id"], []).append(event)
        await self._relations.bundle_rooms(requester.user_id, by_room)
        out_results = []
        for rank, event, row in results:
            item: dict[str, Any] = {"rank": rank, "result": event}
            if context is not None:
                item["context"] = await self._context(requester.user_id, row, context)
            out_results.append(item)
        room_events: dict[str, Any] = {"count": count, "highlights": highlight_terms(term), "results": out_results}
        if not exhausted and out_results:
            room_events["next_batch"] = encode_counter("s", offset)
        if include_state:
            room_events["state"] = {room_id: await self._rooms.get_state(requester, room_id) for room_id in by_room}
        return {"search_categories": {"room_events": room_events}}

    async def _load_visible(self, user_id: str, hits: list[Any]) -> list[tuple[Optional[dict[str, Any]], Any]]:
        """For each hit, its client event and row if the user may see it, else ``(None, None)``."""
        by_room: dict[str, list[Any]] = {}
        for hit in hits:
            by_room.setdefault(hit.room_id, []).append(hit)
        found: dict[str, tuple[dict[str, Any], Any]] = {}
        for room_id, room_hits in by_room.items():
            rows = await self._events.get_events(room_id, [h.event_id for h in room_hits])
            ordered = [rows[h.event_id] for h in room_hits if h.event_id in rows]
            visible = await self._rooms._visible_rows(user_id, room_id, ordered)
            for row, event in zip(visible, await self._loader.serialize_rows(room_id, visible)):
                found[row.event_id] = (event, row)
        return [found.get(h.event_id, (None, None)) for h in hits]

    async def _context(self, user_id: str, row: Any, context: Mapping[str, Any]) -> dict[str, Any]:
        before_n = _int_in(context, "before_limit", 5, MAX_CONTEXT)
        after_n = _int_in(context, "after_limit", 5, MAX_CONTEXT)
        include_profile = context.get("include_profile", False)
        if not isinstance(include_profile, bool):
            raise bad_json("'include_profile' must be a boolean")
        room_id = row.room_id
        before, _ = await self._events.paginate(room_id, row.depth, row.stream_position, True, before_n)
        after, _ = await self._events.paginate(room_id, row.depth, row.stream_position, False, after_n)
        before = await self._rooms._visible_rows(user_id, room_id, before)
        after = await self._rooms._visible_rows(user_id, room_id, after)
        first = before[-1] if before else row
        last = after[-1] if after else row
        out: dict[str, Any] = {
            "start": TopoToken(first.depth, first.stream_position).encode(),
            "end": TopoToken(last.depth, last.stream_position).encode(),
            "events_before": await self._loader.serialize_rows(room_id, before),
            "events_after": await self._loader.serialize_rows(room_id, after),
        }
        if include_profile:
            senders = {r.sender for r in [row, *before, *after]}
            state = await self._events.get_current_state_ids(room_id)
            members = await self._loader.state_events(
                room_id, {("m.room.member", s): state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
            )
            profiles = {}
            for (_, sender), member in members.items():
                profile = {}
                for key in ("displayname", "avatar_url"):
                    if isinstance(member.content.get(key), str):
                        profile[key] = member.content[key]
                profiles[sender] = profile
            out["profile_info"] = profiles
        return out


class UserDirectoryHandler:
    """POST /user_directory/search over a :class:`storage.stores.directory.DirectoryStore`."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def search(self, requester: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """Users who share a room with the requester or are in a published room, matching ``search_term``."""
        term = body.get("search_term")
        if term is None:
            raise missing_param("search_term")
        if not isinstance(term, str):
            raise bad_json("'search_term' must be a string")
        limit = body.get("limit", DEFAULT_USER_SEARCH_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise bad_json("'limit' must be a non-negative integer")
        limit = min(limit, MAX_USER_SEARCH_LIMIT)
        term = term.strip()
        if not term or limit == 0:
            return {"results": [], "limited": False}
        users, limited = await self._store.search_users(requester.user_id, term, limit)
        results = []
        for user in users:
            entry: dict[str, Any] = {"user_id": user.user_id}
            if user.display_name is not None:
                entry["display_name"] = user.display_name
            if user.avatar_url is not None:
                entry["avatar_url"] = user.avatar_url
            results.append(entry)
        return {"results": results, "limited": limited}


class ReportHandler:
    """Content reports, stored for the server's administrators."""

    def __init__(self, rooms: Any, events_store: Any, store: Any, server_name: str) -> None:
        self._rooms = rooms
        self._events = events_store
        self._store = store
        self._server_name = server_name

    @staticmethod
    def _reason(body: Mapping[str, Any], required: bool) -> Optional[str]:
        if "reason" not in body:
            if required:
                raise missing_param("reason")
            return None
        reason = body["reason"]
        if not isinstance(reason, str):
            raise bad_json("'reason' must be a string")
        return reason

    async def report_event(self, requester: Any, room_id: str, event_id: str, body: Mapping[str, Any]) -> None:
        """POST /rooms/{roomId}/report/{eventId}: reporters must be joined and able to see the event."""
        reason = self._reason(body, required=False)
        score = body.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not -100 <= score <= 0):
            raise bad_json("'score' must be an integer between -100 and 0")
        membership = await self._events.get_membership(room_id, requester.user_id)
        if membership is None or membership.membership != "join":
            raise not_found("Event not found or you are not joined to the room")
        # 404 when the event is unknown or not visible to the reporter.
        await self._rooms.get_event(requester, room_id, event_id)
        await self._store.add_room_report(room_id, event_id, requester.user_id, reason, score, self._rooms.loader.now_ms())

    async def report_room(self, requester: Any, room_id: str, body: Mapping[str, Any]) -> None:
        """POST /rooms/{roomId}/report: any user may report a room known here."""
        reason = self._reason(body, required=True)
        if await self._rooms.loader.room_version(room_id) is None:
            raise not_found("Room not found")
        await self._store.add_room_report(room_id, None, requester.user_id, reason, None, self._rooms.loader.now_ms())

    async def report_user(self, requester: Any, user_id: str, body: Mapping[str, Any]) -> None:
        """POST /users/{userId}/report: local users must exist; remote users cannot be checked."""
        reason = self._reason(body, required=True)
        if not ids.is_valid_user_id(user_id):
            raise invalid_param("Invalid user ID")
        if user_id.split(":", 1)[1] == self._server_name and not await self._store.user_exists(user_id):
            raise not_found("User not found")
        await self._store.add_user_report(user_id, requester.user_id, reason, self._rooms.loader.now_ms())
