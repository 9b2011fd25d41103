"""The in-memory tail of a sharded stream, fed by the bus (DESIGN.md §3).

A :class:`StreamTail` holds, for each shard of one stream, the recent rows
it has seen, in position order, and the position up to which it knows
*everything* (``current``). Rows arrive from a bus subscription
(:meth:`on_entry`); when the bus reports a gap whose upper bound is known
(:meth:`on_gap`) the missing rows are read from PostgreSQL with the
``fetch`` function, so the tail never skips a committed row. Older ranges
than the tail holds are answered ``None`` by :meth:`rows`: the caller then
reads PostgreSQL.

Gaps with no upper bound (Redis lost its data while the shard was quiet)
are left open: the next entry on that shard names its predecessor and turns
the gap into a bounded one, which is caught up then. Reading "everything
after X" from PostgreSQL instead could step over a position whose
transaction is still in flight and lose it forever.

Listeners are told of each new row (to wake long-polling syncs); waiters
can wait until a given position is known (read your writes).
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Awaitable, Callable, Optional, Sequence

from twisted.internet import defer

logger = logging.getLogger(__name__)

Fetch = Callable[[int, int, int, int], Awaitable[Sequence[Any]]]
Decode = Callable[[int, int, Any], Any]

CATCH_UP_PAGE = 500


class StreamTail:
    """Recent rows of every shard of one stream, and how far each shard is known.

    ``fetch(shard, after, upto, limit)`` returns the rows with
    ``after < position <= upto`` from PostgreSQL (each with a
    ``stream_position`` attribute), ``decode(shard, position, payload)`` turns
    a bus payload into a row (``ValueError`` if malformed). Positions of
    ``durable=False`` streams (typing) are not in PostgreSQL: their gaps are
    simply skipped, as the spec allows typing to be lost.
    """

    def __init__(
        self,
        clock: Any,
        stream: str,
        shard_count: int,
        fetch: Optional[Fetch],
        decode: Decode,
        capacity: int = 2000,
        durable: bool = True,
    ) -> None:
        self._clock = clock
        self.stream = stream
        self.shard_count = shard_count
        self._fetch = fetch
        self._decode = decode
        self._capacity = capacity
        self._durable = durable
        self._rows: list[collections.deque[tuple[int, Any]]] = [collections.deque() for _ in range(shard_count)]
        # (position, when it arrived here) of the rows held, per shard, for the sync batching window.
        self._arrivals: list[collections.deque[tuple[int, float]]] = [collections.deque() for _ in range(shard_count)]
        self._floor = [0] * shard_count
        self._current = [0] * shard_count
        self._listeners: list[Callable[[int, Any], None]] = []
        self._early_listeners: list[Callable[[int, Any], None]] = []
        self._reset_listeners: list[Callable[[int, int], None]] = []
        self._waiters: list[tuple[int, int, defer.Deferred]] = []
        self.started = False

    # -- feeding ---------------------------------------------------------------

    def start(self, positions: Sequence[int]) -> None:
        """Start knowing each shard up to ``positions`` (read from PostgreSQL at startup)."""
        if len(positions) != self.shard_count:
            raise ValueError("one position per shard")
        self._floor = list(positions)
        self._current = list(positions)
        self.started = True

    def add_listener(self, listener: Callable[[int, Any], None]) -> None:
        """Call ``listener(shard, row)`` for every new row."""
        self._listeners.append(listener)

    def add_early_listener(self, listener: Callable[[int, Any], None]) -> None:
        """Call ``listener(shard, row)`` for every new row *before* its position becomes current:
        before read-your-writes waiters and :meth:`add_listener` listeners (which wake
        long-polls) run, so a cache it drops is never read at or past that position."""
        self._early_listeners.append(listener)

    def add_reset_listener(self, listener: Callable[[int, int], None]) -> None:
        """Call ``listener(shard, position)`` when a non-durable shard lost updates before
        ``position``, or a row at ``position`` could not be decoded (so listeners never saw it)."""
        self._reset_listeners.append(listener)

    def current(self) -> tuple[int, ...]:
        """For each shard, the position up to which every row is known."""
        return tuple(self._current)

    def on_entry(self, entry: Any) -> None:
        """Bus subscription handler: one entry of ``<stream>:<shard>``."""
        shard, position = entry.shard, entry.position
        if position <= self._current[shard]:
            return
        try:
            row = self._decode(shard, position, entry.payload)
        except ValueError as e:
            logger.warning("%s:%s@%s: undecodable payload (%s); skipped", self.stream, shard, position, e)
            row = None
            self._reset(shard, position)
        self._append(shard, position, row)

    async def on_gap(self, gap: Any) -> Optional[int]:
        """Bus subscription gap handler: catch up ``(after, before)`` from PostgreSQL.

        Returns the position caught up to, or None when the gap cannot be
        closed yet (unknown upper bound, or a non-durable stream).
        """
        shard = gap.shard
        if gap.before is None or not self._durable or self._fetch is None:
            if not self._durable and gap.before is not None:
                # Updates were lost (trimmed, or the writer restarted and
                # forgot its state): listeners reset what they derived from
                # this shard as of the next entry's position.
                self._reset(shard, gap.before)
                if gap.before - 1 > self._current[shard]:
                    self._advance(shard, gap.before - 1)
            logger.info("%s:%s gap (%s) after %s left to the next entry", self.stream, shard, gap.reason, gap.after)
            return None
        upto = gap.before - 1
        after = max(self._current[shard], gap.after or 0)
        while after < upto:
            rows = await self._fetch(shard, after, upto, CATCH_UP_PAGE)
            for row in rows:
                if row.stream_position > self._current[shard]:
                    self._append(shard, row.stream_position, row)
            if len(rows) < CATCH_UP_PAGE:
                break
            after = rows[-1].stream_position
        if upto > self._current[shard]:
            self._advance(shard, upto)
        return upto if upto >= 1 else None

    def _reset(self, shard: int, position: int) -> None:
        for listener in list(self._reset_listeners):
            try:
                listener(shard, position)
            except Exception:
                logger.exception("%s tail reset listener failed", self.stream)

    def _append(self, shard: int, position: int, row: Any) -> None:
        rows = self._rows[shard]
        if row is not None:
            for listener in list(self._early_listeners):
                try:
                    listener(shard, row)
                except Exception:
                    logger.exception("%s tail early listener failed", self.stream)
            rows.append((position, row))
            arrivals = self._arrivals[shard]
            arrivals.append((position, self._clock.seconds()))
            while len(rows) > self._capacity:
                dropped, _ = rows.popleft()
                arrivals.popleft()
                self._floor[shard] = dropped
        self._advance(shard, position)
        if row is not None:
            for listener in list(self._listeners):
                try:
                    listener(shard, row)
                except Exception:
                    logger.exception("%s tail listener failed", self.stream)

    def _advance(self, shard: int, position: int) -> None:
        self._current[shard] = position
        if self._waiters:
            ready = [w for w in self._waiters if w[0] == shard and w[1] <= position]
            if ready:
                self._waiters = [w for w in self._waiters if not (w[0] == shard and w[1] <= position)]
                for _, _, d in ready:
                    if not d.called:
                        d.callback(True)

    # -- reading ---------------------------------------------------------------

    def rows(self, shard: int, after: int, upto: int) -> Optional[list[Any]]:
        """Rows with ``after < position <= upto``, or None if the tail does not hold that range."""
        if after < self._floor[shard] or upto > self._current[shard]:
            return None
        return [row for position, row in self._rows[shard] if after < position <= upto]

    def first_arrival_after(self, positions: Sequence[int]) -> Optional[float]:
        """When the earliest row held after ``positions`` (one per shard) arrived here, or None if there is none."""
        first: Optional[float] = None
        for shard, after in enumerate(positions):
            if self._current[shard] <= after:
                continue
            earliest = None
            for position, arrived in reversed(self._arrivals[shard]):
                if position <= after:
                    break
                earliest = arrived
            if earliest is not None and (first is None or earliest < first):
                first = earliest
        return first

    def wait_for(self, shard: int, position: int, timeout: float) -> "defer.Deferred[bool]":
        """Fires True once ``shard`` is known up to ``position``, False after ``timeout`` seconds."""
        if self._current[shard] >= position:
            return defer.succeed(True)
        d: defer.Deferred = defer.Deferred()
        entry = (shard, position, d)
        self._waiters.append(entry)

        def expire() -> None:
            if not d.called:
                self._waiters = [w for w in self._waiters if w is not entry]
                d.callback(False)

        call = self._clock.callLater(timeout, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d
