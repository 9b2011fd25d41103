"""Wakes long-polling syncs when something that concerns them arrives (pure, clock-driven).

Wake-ups can be batched: with ``batch_window > 0`` the first notification
starts a timer of that many seconds and every waiter notified until it
fires is woken together when it does. The bus delivers entries in batches
(one XREAD returns every entry written since the previous one) and a burst
of sends arrives within a few milliseconds; without the window each entry
of the burst wakes the same long-polls again, and each wake-up rebuilds a
/sync response (memberships, account data, receipts... read again) that
carries one event instead of several. The window is bounded (later
notifications never extend it), so it adds at most ``batch_window`` to the
delivery latency; ``0`` wakes synchronously.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import attrs
from prometheus_client import Counter
from twisted.internet import defer

WAKEUPS = Counter("estuary_sync_wakeups_total", "Long-polling /sync requests woken because something concerned them")
WAKE_BATCHES = Counter("estuary_sync_wake_batches_total", "Batches of long-poll wake-ups (one per window with notifications)")


@attrs.define(eq=False)
class _Waiter:
    user_id: str
    rooms: frozenset[str]
    deferred: defer.Deferred


class Notifier:
    """Long-poll waiters indexed by user and by room."""

    def __init__(self, clock: Any, batch_window: float = 0.0) -> None:
        if batch_window < 0:
            raise ValueError("batch_window must be >= 0")
        self._clock = clock
        self._window = batch_window
        self._by_user: dict[str, set[_Waiter]] = {}
        self._by_room: dict[str, set[_Waiter]] = {}
        #: How many times each user was notified: a sync compares it before building and before
        #: waiting, so a wake-up that came while it was building (no waiter yet) is not lost.
        self._generations: dict[str, int] = {}
        # Waiters notified during the current window (insertion-ordered).
        self._pending: dict[_Waiter, None] = {}
        self._flush_call: Optional[Any] = None

    def generation(self, user_id: str) -> int:
        """A counter that moves whenever :meth:`notify_user` is called for ``user_id``."""
        return self._generations.get(user_id, 0)

    def wait(self, user_id: str, rooms: Iterable[str], timeout: float) -> "defer.Deferred[bool]":
        """Fires True when :meth:`notify_user` / :meth:`notify_room` concerns this waiter, False at timeout."""
        waiter = _Waiter(user_id, frozenset(rooms), defer.Deferred())
        self._by_user.setdefault(user_id, set()).add(waiter)
        for room in waiter.rooms:
            self._by_room.setdefault(room, set()).add(waiter)
        call = self._clock.callLater(max(0.0, timeout), self._fire, waiter, False)

        def cleanup(result: Any) -> Any:
            if call.active():
                call.cancel()
            self._remove(waiter)
            return result

        waiter.deferred.addBoth(cleanup)
        return waiter.deferred

    def waiting(self) -> int:
        """How many syncs are waiting (for metrics and tests)."""
        return sum(len(w) for w in self._by_user.values())

    def notify_user(self, user_id: str) -> None:
        """Wake every waiter of ``user_id`` (at the end of the current window)."""
        self._generations[user_id] = self._generations.get(user_id, 0) + 1
        for waiter in list(self._by_user.get(user_id, ())):
            self._wake(waiter)

    def notify_room(self, room_id: str) -> None:
        """Wake every waiter interested in ``room_id`` (at the end of the current window)."""
        for waiter in list(self._by_room.get(room_id, ())):
            self._wake(waiter)

    def _wake(self, waiter: _Waiter) -> None:
        if waiter.deferred.called:
            return
        if self._window <= 0:
            WAKE_BATCHES.inc()
            self._fire(waiter, True)
            return
        self._pending[waiter] = None
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(self._window, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        pending, self._pending = self._pending, {}
        if pending:
            WAKE_BATCHES.inc()
        for waiter in pending:
            self._fire(waiter, True)

    def _fire(self, waiter: _Waiter, woken: bool) -> None:
        if not waiter.deferred.called:
            if woken:
                WAKEUPS.inc()
            waiter.deferred.callback(woken)

    def _remove(self, waiter: _Waiter) -> None:
        self._pending.pop(waiter, None)
        if not self._pending and self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush_call = None
        users = self._by_user.get(waiter.user_id)
        if users is not None:
            users.discard(waiter)
            if not users:
                del self._by_user[waiter.user_id]
        for room in waiter.rooms:
            waiters = self._by_room.get(room)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_room[room]
