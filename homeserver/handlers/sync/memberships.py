"""Each syncing user's room memberships, kept between /sync builds.

Every /sync build starts from the user's memberships (``room_memberships``).
They change only with a membership event of the user, and every event a
sync process will answer for passes through its events tail (from the bus,
or from PostgreSQL when the tail closes a gap) before the tail's position
moves past it. So a list read once stays right until the tail shows an
``m.room.member`` event whose ``state_key`` is the user; the tail's
listener drops it then.

A read that overlaps such an event (started before the tail saw it,
finished after) could store what PostgreSQL held before the event: each
user has a generation, bumped by every drop, and a read only stores its
result if the generation did not move while it ran.

Read your writes holds: a user's own join or leave is an event whose
position the sync waits for (``WriteTracker`` / marks) before building, so
the drop happens before the build reads the cache. The one membership
change without an event, forgetting a room (``forgotten``), matters only
for a room left in the range being built; :meth:`SyncHandler._build` reads
PostgreSQL in that case (and for initial syncs).
"""

from __future__ import annotations

import collections
from typing import Any, Awaitable, Callable, Optional

#: Users whose memberships are held (least recently synced out).
MAX_USERS = 50_000


class MembershipCache:
    """User ID -> the rows of ``get_memberships_for_user``, dropped by the events tail."""

    def __init__(self, read: Callable[[str], Awaitable[list[Any]]], max_users: int = MAX_USERS) -> None:
        self._read = read
        self._max = max_users
        self._held: "collections.OrderedDict[str, list[Any]]" = collections.OrderedDict()
        #: User -> [reads in flight, drops since the first of them began].
        self._reading: dict[str, list[int]] = {}
        #: Bumped by :meth:`clear`, so that reads in flight then are not stored either.
        self._epoch = 0
        self.hits = 0
        self.misses = 0

    def on_row(self, shard: int, row: Any) -> None:
        """Events tail listener: a membership event of a user drops what is held for them."""
        if getattr(row, "type", None) == "m.room.member" and isinstance(getattr(row, "state_key", None), str):
            self.invalidate(row.state_key)

    def invalidate(self, user_id: str) -> None:
        """Forget the user's memberships (and any read of them in flight)."""
        self._held.pop(user_id, None)
        reading = self._reading.get(user_id)
        if reading is not None:
            reading[1] += 1

    def clear(self) -> None:
        """Forget everything (the tail may have missed rows)."""
        self._held.clear()
        self._epoch += 1

    async def get(self, user_id: str) -> list[Any]:
        """The user's memberships: held, or read from PostgreSQL (and held if nothing changed meanwhile)."""
        held = self._held.get(user_id)
        if held is not None:
            self._held.move_to_end(user_id)
            self.hits += 1
            return list(held)
        self.misses += 1
        reading = self._reading.setdefault(user_id, [0, 0])
        reading[0] += 1
        drops, epoch = reading[1], self._epoch
        try:
            rows = await self._read(user_id)
        finally:
            reading[0] -= 1
            if reading[0] == 0:
                del self._reading[user_id]
        if reading[1] == drops and self._epoch == epoch and self._max > 0:
            self._held[user_id] = list(rows)
            self._held.move_to_end(user_id)
            while len(self._held) > self._max:
                self._held.popitem(last=False)
        return list(rows)

    def peek(self, user_id: str) -> Optional[list[Any]]:
        """What is held for the user, without reading (tests, diagnostics)."""
        held = self._held.get(user_id)
        return list(held) if held is not None else None
