"""Wakes long-polling syncs when something that concerns them arrives (pure, clock-driven)."""

from __future__ import annotations

from typing import Any, Iterable

import attrs
from twisted.internet import defer


@attrs.define(eq=False)
class _Waiter:
    user_id: str
    rooms: frozenset[str]
    deferred: defer.Deferred


class Notifier:
    """Long-poll waiters indexed by user and by room."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._by_user: dict[str, set[_Waiter]] = {}
        self._by_room: dict[str, set[_Waiter]] = {}
        #: How many times each user was notified: a sync compares it before building and before
        #: waiting, so a wake-up that came while it was building (no waiter yet) is not lost.
        self._generations: dict[str, int] = {}

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
        """Wake every waiter of ``user_id``."""
        self._generations[user_id] = self._generations.get(user_id, 0) + 1
        for waiter in list(self._by_user.get(user_id, ())):
            self._fire(waiter, True)

    def notify_room(self, room_id: str) -> None:
        """Wake every waiter interested in ``room_id``."""
        for waiter in list(self._by_room.get(room_id, ())):
            self._fire(waiter, True)

    def _fire(self, waiter: _Waiter, woken: bool) -> None:
        if not waiter.deferred.called:
            waiter.deferred.callback(woken)

    def _remove(self, waiter: _Waiter) -> None:
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
