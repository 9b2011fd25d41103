"""Device lists and key counts for /sync and GET /keys/changes.

``device_lists.changed`` lists the users whose devices or keys changed
between two tokens and who share a room with the syncing user now (the user
included, as Synapse does: a client learns of its own new devices), plus the
users who newly share a room with them; ``left`` the users who no longer
share any room with them after a membership change in between
(client-server API, "Tracking the device list for a user").

The ``device_lists`` stream tail (bus, PostgreSQL for gaps) says how far each
shard is complete and wakes the long-polls of the room mates of a user whose
list changed. Which rooms are shared is read from PostgreSQL's current
memberships; the membership changes in between from the events table for the
token's range.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

from twisted.internet import defer

logger = logging.getLogger(__name__)

#: libolm-based clients upload one-time keys only when they see a count for this algorithm.
SIGNED_CURVE25519 = "signed_curve25519"


def device_list_delta(user_id: str, list_changed: Iterable[str], member_changes: Sequence[tuple[str, str, str]],
                      members_of_joined: Iterable[str], members_of_left: Iterable[str],
                      mates_now: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(changed, left)`` from the facts of a token range (pure).

    ``list_changed``: users with a device_lists position in the range;
    ``member_changes``: ``(room, user, membership)`` of member events in the
    user's rooms in the range, oldest first; ``members_of_joined`` /
    ``members_of_left``: the current members of the rooms the user joined /
    left in the range; ``mates_now``: who shares a room with the user now.
    """
    mates = set(mates_now) | {user_id}
    newly: set[str] = set(members_of_joined)
    lost: set[str] = set(members_of_left)
    for _, member, membership in member_changes:
        if member == user_id:
            continue
        if membership == "join":
            newly.add(member)
            lost.discard(member)
        elif membership in ("leave", "ban"):
            lost.add(member)
    newly.discard(user_id)
    changed = (set(list_changed) & mates) | (newly & mates)
    left = (lost - mates) - changed
    return sorted(changed), sorted(left)


class DeviceListSource:
    """Device list deltas, one-time key counts and wake-ups for /sync."""

    def __init__(self, store: Any, tail: Any, notifier: Any, events_shard_of: Callable[[str], int],
                 events_shard_count: int, events_tail: Any = None) -> None:
        self._store = store
        #: The events tail, if any: membership changes in ranges it holds need no database read.
        self._events_tail = events_tail
        self.tail = tail
        self._notifier = notifier
        self._events_shard_of = events_shard_of
        self._events_shards = events_shard_count
        if tail is not None:
            tail.add_listener(self._on_row)

    def _on_row(self, shard: int, row: Any) -> None:
        """Wake the long-polls of everyone sharing a room with the user whose list changed."""
        self._notifier.notify_user(row.user_id)
        d = defer.ensureDeferred(self._store.get_room_mates(row.user_id))

        def wake(mates: set[str]) -> None:
            for mate in mates:
                self._notifier.notify_user(mate)

        d.addCallback(wake)
        d.addErrback(lambda f: logger.warning("device list wake-up for %s failed: %s", row.user_id, f.getErrorMessage()))

    def current(self) -> tuple[int, ...]:
        """The positions the tail knows completely."""
        return self.tail.current()

    def pending_after(self, since: Sequence[int]) -> bool:
        """Whether any shard advanced past ``since`` (the next build decides whether it concerns the user)."""
        return any(upto > after for after, upto in zip(since, self.current()))

    async def changes(self, user_id: str, room_ids: Iterable[str], since_events: Sequence[int],
                      now_events: Sequence[int], since_lists: Sequence[int],
                      now_lists: Sequence[int]) -> tuple[list[str], list[str]]:
        """``(changed, left)`` between two tokens; ``room_ids``: every room the user has a membership in."""
        ranges = {s: (since_lists[s], now_lists[s]) for s in range(len(now_lists)) if now_lists[s] > since_lists[s]}
        list_changed = await self._store.get_changed_users(ranges) if ranges else set()
        by_shard: dict[int, list[str]] = {}
        for room_id in room_ids:
            by_shard.setdefault(self._events_shard_of(room_id), []).append(room_id)
        wanted = {s: (rooms, since_events[s], now_events[s]) for s, rooms in by_shard.items()
                  if now_events[s] > since_events[s]}
        member_changes = await self._membership_changes(wanted) if wanted else []
        if not list_changed and not member_changes:
            return [], []
        mine: dict[str, str] = {}
        for room_id, member, membership in member_changes:
            if member == user_id:
                mine[room_id] = membership
        joined = [r for r, m in mine.items() if m == "join"]
        left_rooms = [r for r, m in mine.items() if m in ("leave", "ban")]
        members_of_joined = await self._store.get_room_members_joined(joined) if joined else set()
        members_of_left = await self._store.get_room_members_joined(left_rooms) if left_rooms else set()
        mates = await self._store.get_room_mates(user_id)
        return device_list_delta(user_id, list_changed, member_changes, members_of_joined, members_of_left, mates)

    async def _membership_changes(self, wanted: dict[int, tuple[list[str], int, int]]) -> list[tuple[str, str, str]]:
        """``(room_id, user_id, membership)`` of the member events of ``shard -> (rooms, after, upto)``,
        oldest first: from the events tail for the shards whose range it holds, PostgreSQL for the rest."""
        found: list[tuple[int, str, str, str]] = []
        for shard, (rooms, after, upto) in wanted.items():
            rows = self._events_tail.rows(shard, after, upto) if self._events_tail is not None else None
            if rows is None:
                # Some range is older than the tail holds: read them all, as the store orders them.
                return await self._store.get_membership_changes(wanted)
            in_rooms = set(rooms)
            found.extend((r.stream_position, r.room_id, r.state_key, r.membership) for r in rows
                         if r.type == "m.room.member" and r.room_id in in_rooms
                         and r.state_key is not None and r.membership is not None)
        found.sort()  # the store's order: by position, then room, user and membership
        return [(room, user, membership) for _, room, user, membership in found]

    async def key_counts(self, user_id: str, device_id: Optional[str]) -> tuple[dict[str, int], list[str]]:
        """``device_one_time_keys_count`` (with ``signed_curve25519`` always present) and
        ``device_unused_fallback_key_types`` of the syncing device."""
        if device_id is None:
            return {}, []
        counts, fallback = await self._store.get_key_counts(user_id, device_id)
        counts.setdefault(SIGNED_CURVE25519, 0)
        return counts, fallback

