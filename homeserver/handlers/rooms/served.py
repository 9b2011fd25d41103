"""What part B adds to the events the room and sync handlers serve, as wrappers.

:class:`ServedRoomHandler` and :class:`ServedSyncHandler` delegate every
call to part A's handlers and then

* bundle relation aggregations (``unsigned.m.relations``) into served events;
* drop events sent by users the requester ignores (``m.ignored_user_list``)
  from ``/messages``, ``/context`` and ``/sync`` timelines, and invites from
  them in ``/sync``;
* validate ``m.room.canonical_alias`` state against the alias table before
  it is sent, and refuse duplicate annotations and threads off relations.

Wrapping keeps the room and sync handlers ignorant of these features; the
wiring in ``workers/directory.py`` mounts the wrapped handlers.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional

IgnoredLookup = Callable[[str], Awaitable[frozenset[str]]]

IGNORED_USER_LIST = "m.ignored_user_list"


def ignored_users_from(content: Optional[Mapping[str, Any]]) -> frozenset[str]:
    """The user IDs of an ``m.ignored_user_list`` content (malformed parts ignored)."""
    if not isinstance(content, Mapping):
        return frozenset()
    users = content.get("ignored_users")
    if not isinstance(users, Mapping):
        return frozenset()
    return frozenset(u for u in users if isinstance(u, str))


def make_ignored_lookup(account_data_store: Any) -> IgnoredLookup:
    """``ignored(user_id)`` reading the user's global ``m.ignored_user_list`` account data."""

    async def ignored(user_id: str) -> frozenset[str]:
        return ignored_users_from(await account_data_store.get_account_data(user_id, None, IGNORED_USER_LIST))

    return ignored


def without_senders(events: Iterable[dict[str, Any]], senders: frozenset[str]) -> list[dict[str, Any]]:
    """``events`` minus the non-state events sent by ``senders`` (spec, "Ignoring Users": state
    events of ignored users are still sent, so room state looks the same to everyone)."""
    return [e for e in events if "state_key" in e or e.get("sender") not in senders]


class ServedRoomHandler:
    """Part A's room handler with aggregations, ignored users and canonical alias checks."""

    def __init__(self, rooms: Any, relations: Any, directory: Any = None, ignored: Optional[IgnoredLookup] = None) -> None:
        self._inner = rooms
        self._relations = relations
        self._directory = directory
        self._ignored = ignored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _ignored_by(self, user_id: str) -> frozenset[str]:
        return await self._ignored(user_id) if self._ignored is not None else frozenset()

    async def get_event(self, requester: Any, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/event/{eventId} with aggregations."""
        event = await self._inner.get_event(requester, room_id, event_id)
        await self._relations.bundle(requester.user_id, room_id, [event])
        return event

    async def messages(self, requester: Any, room_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """GET /rooms/{roomId}/messages with aggregations, without ignored senders."""
        result = await self._inner.messages(requester, room_id, *args, **kwargs)
        result["chunk"] = without_senders(result["chunk"], await self._ignored_by(requester.user_id))
        await self._relations.bundle(requester.user_id, room_id, result["chunk"])
        return result

    async def context(self, requester: Any, room_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """GET /rooms/{roomId}/context/{eventId} with aggregations, neighbours from ignored senders dropped."""
        result = await self._inner.context(requester, room_id, *args, **kwargs)
        ignored = await self._ignored_by(requester.user_id)
        result["events_before"] = without_senders(result["events_before"], ignored)
        result["events_after"] = without_senders(result["events_after"], ignored)
        await self._relations.bundle(
            requester.user_id, room_id, [result["event"], *result["events_before"], *result["events_after"]]
        )
        return result

    async def send_event(self, requester: Any, room_id: str, event_type: str, content: Any,
                         txn_id: Optional[str]) -> Any:
        """PUT /rooms/{roomId}/send/{eventType}/{txnId}, invalid new relations refused
        (duplicate annotations, threads off relations)."""
        await self._relations.check_new_relation(requester, room_id, event_type, content, txn_id)
        return await self._inner.send_event(requester, room_id, event_type, content, txn_id)

    async def send_state(self, requester: Any, room_id: str, event_type: str, state_key: str, content: Any) -> Any:
        """PUT /rooms/{roomId}/state/{eventType}/{stateKey}, canonical aliases checked."""
        if (self._directory is not None and event_type == "m.room.canonical_alias" and state_key == ""
                and isinstance(content, dict)):
            await self._directory.check_canonical_alias_send(requester.user_id, room_id, content)
        return await self._inner.send_state(requester, room_id, event_type, state_key, content)


class ServedSyncHandler:
    """Part A's sync handler with aggregations on timelines and ignored users honoured."""

    def __init__(self, sync: Any, relations: Any, ignored: Optional[IgnoredLookup] = None) -> None:
        self._inner = sync
        self._relations = relations
        self._ignored = ignored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def sync(self, requester: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One /sync request, post-processed."""
        response = await self._inner.sync(requester, *args, **kwargs)
        user_id = requester.user_id
        ignored = await self._ignored(user_id) if self._ignored is not None else None
        rooms = response.get("rooms", {})
        if ignored:
            for section in ("join", "leave"):
                for room in rooms.get(section, {}).values():
                    timeline = room.get("timeline")
                    if timeline is not None and "events" in timeline:
                        timeline["events"] = without_senders(timeline["events"], ignored)
            invites = rooms.get("invite", {})
            for room_id in [r for r, room in invites.items() if _inviter(room, user_id) in ignored]:
                del invites[room_id]
        await self._relations.bundle_sync(user_id, response, ignored)
        return response


def _inviter(invited_room: Mapping[str, Any], user_id: str) -> Optional[str]:
    """The sender of the user's invite in a /sync ``rooms.invite`` entry."""
    for event in invited_room.get("invite_state", {}).get("events", []):
        if event.get("type") == "m.room.member" and event.get("state_key") == user_id:
            return event.get("sender")
    return None
