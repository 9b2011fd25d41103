"""Legacy (deprecated) sync endpoints: ``GET /initialSync``, ``GET /events``, ``GET /rooms/{roomId}/initialSync``.

They are reshaped views of what /sync and the room handler already serve,
so they share their tokens, visibility rules and read-your-writes waits:
``/initialSync`` is an initial /sync, its ``end`` the /sync ``next_batch``,
and ``/events`` an incremental /sync flattened to one chunk of events.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from homeserver.errors import invalid_param

DEFAULT_INITIAL_SYNC_LIMIT = 10
MAX_INITIAL_SYNC_LIMIT = 100


def _with_room_id(events: list[dict[str, Any]], room_id: str) -> list[dict[str, Any]]:
    return [dict(e, room_id=room_id) for e in events]


def current_state_of(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The room state after a /sync room section: its ``state`` overlaid by timeline state events (pure)."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for event in section.get("state", {}).get("events", []) + section.get("timeline", {}).get("events", []):
        if "state_key" in event:
            state[(event["type"], event["state_key"])] = event
    return list(state.values())


class LegacySyncHandler:
    """``sync`` is the (served) sync handler, ``rooms`` the room handler, ``events_store`` the
    event store, ``directory_store`` tells published rooms, ``account_data_store`` reads room
    account data."""

    def __init__(self, sync: Any, rooms: Any, events_store: Any, directory_store: Any,
                 account_data_store: Any = None) -> None:
        self._sync = sync
        self._rooms = rooms
        self._events = events_store
        self._directory = directory_store
        self._account_data = account_data_store

    async def _visibility(self, room_id: str) -> str:
        return "public" if await self._directory.is_room_public(room_id) else "private"

    async def initial_sync(self, requester: Any, limit: Optional[int], archived: bool) -> dict[str, Any]:
        """GET /initialSync: every room of the user with its latest messages and current state."""
        limit = DEFAULT_INITIAL_SYNC_LIMIT if limit is None else max(0, min(limit, MAX_INITIAL_SYNC_LIMIT))
        sync_filter = json.dumps({"room": {"timeline": {"limit": limit}, "include_leave": archived}})
        response = await self._sync.sync(requester, None, 0, sync_filter)
        end = response["next_batch"]
        rooms = []
        for membership_section, default_membership in (("join", "join"), ("leave", "leave")):
            for room_id, section in response["rooms"].get(membership_section, {}).items():
                timeline = section.get("timeline", {})
                state = _with_room_id(current_state_of(section), room_id)
                own = [e for e in state if e["type"] == "m.room.member" and e["state_key"] == requester.user_id]
                membership = own[0]["content"].get("membership", default_membership) if own else default_membership
                messages: dict[str, Any] = {"chunk": _with_room_id(timeline.get("events", []), room_id), "end": end}
                messages["start"] = timeline.get("prev_batch", end)
                rooms.append({
                    "room_id": room_id,
                    "membership": membership,
                    "messages": messages,
                    "state": state,
                    "visibility": await self._visibility(room_id),
                    "account_data": section.get("account_data", {}).get("events", []),
                })
        for room_id, section in response["rooms"].get("invite", {}).items():
            entry: dict[str, Any] = {"room_id": room_id, "membership": "invite",
                                     "visibility": await self._visibility(room_id)}
            invite = await self._invite_event(room_id, requester.user_id)
            if invite is not None:
                entry["invite"] = invite
            rooms.append(entry)
        return {
            "end": end,
            "rooms": rooms,
            "presence": [],
            "account_data": response.get("account_data", {}).get("events", []),
        }

    async def _invite_event(self, room_id: str, user_id: str) -> Optional[dict[str, Any]]:
        """The user's current invite event in a room, in client format."""
        membership = await self._events.get_membership(room_id, user_id)
        if membership is None or membership.membership != "invite":
            return None
        rows = await self._events.get_events(room_id, [membership.event_id])
        serialized = await self._rooms.loader.serialize_rows(room_id, list(rows.values()))
        return serialized[0] if serialized else None

    async def events(self, requester: Any, from_token: Optional[str], timeout_ms: int) -> dict[str, Any]:
        """GET /events: new timeline events of the user's rooms after ``from_token`` (now if absent)."""
        if from_token is None:
            from_token = self._sync.current_token().encode()
        response = await self._sync.sync(requester, from_token, timeout_ms, None)
        chunk = []
        for section_name in ("join", "leave"):
            for room_id, section in response["rooms"].get(section_name, {}).items():
                chunk.extend(_with_room_id(section.get("timeline", {}).get("events", []), room_id))
        return {"start": from_token, "end": response["next_batch"], "chunk": chunk}

    async def room_initial_sync(self, requester: Any, room_id: str, limit: Optional[int]) -> dict[str, Any]:
        """GET /rooms/{roomId}/initialSync: one room's latest messages and state (403 when not readable)."""
        if not room_id.startswith("!"):
            raise invalid_param("Invalid room ID")
        limit = DEFAULT_INITIAL_SYNC_LIMIT if limit is None else max(0, min(limit, MAX_INITIAL_SYNC_LIMIT))
        state = await self._rooms.get_state(requester, room_id)
        page = await self._rooms.messages(requester, room_id, None, None, "b", limit, None)
        chunk = list(reversed(page["chunk"]))
        result: dict[str, Any] = {
            "room_id": room_id,
            "messages": {"chunk": chunk, "start": page.get("end", page["start"]), "end": page["start"]},
            "state": state,
            "visibility": await self._visibility(room_id),
            "presence": [],
            "receipts": [],
            "account_data": await self._room_account_data(requester.user_id, room_id),
        }
        own = [e for e in state if e["type"] == "m.room.member" and e.get("state_key") == requester.user_id]
        if own:
            result["membership"] = own[0]["content"].get("membership")
        return result

    async def _room_account_data(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        if self._account_data is None:
            return []
        changes = await self._account_data.get_changes_since(user_id, 0)
        return [{"type": data_type, "content": content} for r, data_type, content, _ in changes if r == room_id]
