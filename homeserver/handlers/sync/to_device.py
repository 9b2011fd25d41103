"""Send-to-device messages for /sync: the ``to_device.events`` of the syncing device.

The ``to_device`` stream tail (fed by the bus, PostgreSQL for gaps) says how
far each shard is completely written and whose inbox changed (to wake their
long-polls). Messages are read from PostgreSQL per device; those up to the
position of the ``since`` token the client sends are acknowledged and
deleted (a client repeating an older token gets the rest again).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Sequence

#: Messages returned per response at most; the rest follow in the next sync.
MAX_MESSAGES_PER_SYNC = 100
#: Devices whose acknowledged position this process remembers (least recently synced out).
MAX_REMEMBERED_DEVICES = 100_000


class ToDeviceSource:
    """Device inbox reads and wake-ups for /sync."""

    def __init__(self, store: Any, tail: Any, notifier: Any, shard_of: Callable[[str], int]) -> None:
        self._store = store
        self.tail = tail
        self._notifier = notifier
        self._shard_of = shard_of
        #: (user, device) -> a position up to which this process deleted the
        #: device's messages. Deleted rows stay deleted and positions only
        #: grow, so it stays true whoever serves the device's later syncs.
        self._acked: "collections.OrderedDict[tuple[str, str], int]" = collections.OrderedDict()
        tail.add_listener(lambda shard, row: notifier.notify_user(row.user_id))

    def current(self) -> tuple[int, ...]:
        """The positions the tail knows completely."""
        return self.tail.current()

    def pending_after(self, user_id: str, since: Sequence[int]) -> bool:
        """Whether the user's shard advanced past ``since`` with a write to the user (or unknown rows)."""
        shard = self._shard_of(user_id)
        after, upto = since[shard], self.current()[shard]
        if upto <= after:
            return False
        rows = self.tail.rows(shard, after, upto)
        return rows is None or any(r.user_id == user_id for r in rows)

    async def take(self, user_id: str, device_id: Optional[str], since: Optional[Sequence[int]],
                   now: Sequence[int]) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
        """The device's events after ``since`` up to ``now`` (deleting those up to ``since``: acknowledged),
        and the positions the next token carries (lower than ``now`` if more remain)."""
        if device_id is None or not now:
            return [], tuple(now)
        shard = self._shard_of(user_id)
        after = since[shard] if since else 0
        if since and self._nothing_to_do(user_id, device_id, shard, after, now[shard]):
            return [], tuple(now)
        rows = await self._store.take(user_id, device_id, after, after, now[shard], MAX_MESSAGES_PER_SYNC)
        self._remember_ack(user_id, device_id, after)
        positions = list(now)
        if len(rows) == MAX_MESSAGES_PER_SYNC:
            positions[shard] = rows[-1][0]
        return [event for _, event in rows], tuple(positions)

    def _nothing_to_do(self, user_id: str, device_id: str, shard: int, after: int, upto: int) -> bool:
        """Whether the tail shows that the device has no message in ``(after, upto]`` to read and
        none up to ``after`` left to delete (nothing for the user since what this process
        deleted), so PostgreSQL need not be asked."""
        acked = self._acked.get((user_id, device_id))
        if acked is None or acked > after or upto < acked:
            return False
        rows = self.tail.rows(shard, acked, upto)
        if rows is None or any(r.user_id == user_id for r in rows):
            return False
        self._acked.move_to_end((user_id, device_id))
        return True

    def _remember_ack(self, user_id: str, device_id: str, position: int) -> None:
        key = (user_id, device_id)
        if position >= self._acked.get(key, 0):
            self._acked[key] = position
        self._acked.move_to_end(key)
        while len(self._acked) > MAX_REMEMBERED_DEVICES:
            self._acked.popitem(last=False)

