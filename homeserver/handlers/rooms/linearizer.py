"""Per-key serialisation of async work (one room's event creation at a time).

Pure Twisted: no reactor, no I/O. ``async with linearizer.lock(room_id):``
admits one holder per key; the others wait in arrival order. Keys with no
holder take no memory.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Hashable

from twisted.internet import defer


class Linearizer:
    """Runs critical sections one at a time per key, in FIFO order."""

    def __init__(self, name: str = "linearizer") -> None:
        self.name = name
        # key -> the Deferred the last queued holder fires when it leaves.
        self._tails: dict[Hashable, defer.Deferred] = {}

    def is_queued(self, key: Hashable) -> bool:
        """Whether some holder or waiter exists for ``key``."""
        return key in self._tails

    @contextlib.asynccontextmanager
    async def lock(self, key: Hashable) -> AsyncIterator[None]:
        """Hold ``key`` for the body of the ``async with``.

        A waiter that is cancelled still passes the turn on in order: the
        holders after it wait for the one before it.
        """
        previous = self._tails.get(key)
        mine: defer.Deferred = defer.Deferred()
        self._tails[key] = mine
        if previous is not None:
            try:
                await _wait_without_consuming(previous)
            except BaseException:
                # Give our place to whoever is behind us only once our
                # predecessor is done.
                previous.addBoth(lambda _: self._release(key, mine))
                raise
        try:
            yield
        finally:
            self._release(key, mine)

    def _release(self, key: Hashable, mine: defer.Deferred) -> None:
        if self._tails.get(key) is mine:
            del self._tails[key]
        if not mine.called:
            mine.callback(None)


def _wait_without_consuming(d: defer.Deferred) -> defer.Deferred:
    """A Deferred that fires when ``d`` does, leaving ``d``'s result untouched."""
    waiter: defer.Deferred = defer.Deferred()

    def fire(result: object) -> object:
        if not waiter.called:
            waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter
