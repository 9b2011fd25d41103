"""Presence for /sync: the ``presence.events`` of users sharing a room with the syncing user.

The ``presence`` stream tail (fed by the bus, falling back to PostgreSQL
for ranges it does not hold) says whose presence changed between two
tokens; only the latest change per user is returned. An initial sync gets
the stored presence of every room mate.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from twisted.internet import defer

from homeserver.core.presence import to_client

logger = logging.getLogger(__name__)

#: Rows read per shard from PostgreSQL when the tail lacks a range.
CATCH_UP_LIMIT = 10_000


class PresenceSource:
    """Presence rows for sync responses and wake-ups for the users who should see them."""

    def __init__(self, clock: Any, store: Any, tail: Any, notifier: Any, enabled: bool = True) -> None:
        self._clock = clock
        self._store = store
        self.tail = tail
        self._notifier = notifier
        self.enabled = enabled
        tail.add_listener(self._on_row)

    def current(self) -> tuple[int, ...]:
        """The positions the tail knows completely."""
        return self.tail.current()

    def _on_row(self, shard: int, row: Any) -> None:
        """Wake the long-polls of everyone sharing a room with the user whose presence changed."""
        if not self.enabled:
            return
        user_id = row.presence.user_id
        self._notifier.notify_user(user_id)
        d = defer.ensureDeferred(self._store.get_joined_rooms(user_id))
        d.addCallback(lambda rooms: [self._notifier.notify_room(r) for r in rooms])
        d.addErrback(lambda f: logger.warning("presence wake-up for %s failed: %s", user_id, f.getErrorMessage()))

    def changed_after(self, since: Sequence[int]) -> bool:
        """Whether the tail advanced past ``since`` on any shard."""
        return any(now > then for now, then in zip(self.current(), since))

    async def events(self, user_id: str, since: Optional[Sequence[int]], now: Sequence[int]) -> list[dict[str, Any]]:
        """``m.presence`` events for ``user_id``: changes in ``(since, now]`` (all stored ones when ``since`` is None)."""
        if not self.enabled:
            return []
        if since is not None and not any(n > s for n, s in zip(now, since)):
            return []
        mates = await self._store.get_room_mates(user_id)
        latest: dict[str, Any] = {}
        if since is None:
            latest = {u: row.presence for u, row in (await self._store.get_presence(mates)).items()}
        else:
            for shard, (after, upto) in enumerate(zip(since, now)):
                if upto <= after:
                    continue
                rows = self.tail.rows(shard, after, upto)
                if rows is None:
                    rows = await self._store.get_rows(shard, after, upto, CATCH_UP_LIMIT)
                for row in rows:
                    if row.presence.user_id in mates:
                        latest[row.presence.user_id] = row.presence
        now_ms = int(self._clock.seconds() * 1000)
        return [
            {"type": "m.presence", "sender": u, "content": to_client(latest[u], now_ms)}
            for u in sorted(latest)
        ]
