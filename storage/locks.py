"""Exclusive roles through PostgreSQL session-level advisory locks.

A :class:`SessionLock` holds ``pg_advisory_lock(key)`` on a connection of its
own for as long as the process lives. Exactly one holder exists at a time
across every process sharing the database; when the holder dies, PostgreSQL
ends its session and frees the lock, and a waiting instance takes over at
its next attempt. Used for the ``background`` role (one active instance).
"""

from __future__ import annotations

import hashlib
import logging
import struct
from typing import Any, Callable, Optional

import psycopg2
from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.python.threadpool import ThreadPool

logger = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    return struct.unpack(">q", hashlib.sha256(name.encode("utf-8")).digest()[:8])[0]


class SessionLock:
    """Try to hold an advisory lock; report when it is gained or lost.

    ``on_acquired`` and ``on_lost`` run on the reactor. Every
    ``interval`` seconds the lock holder checks its connection is alive (a
    dead connection means the lock is gone) and a waiter tries again.
    """

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        name: str,
        on_acquired: Callable[[], None],
        on_lost: Callable[[], None],
        interval: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._reactor = reactor
        self._key = lock_key(name)
        self._name = name
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._conn: Optional[Any] = None
        self.held = False
        self._interval = interval
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name=f"lock-{name}")
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._busy = False

    def start(self) -> None:
        self._pool.start()
        self._loop.start(self._interval, now=True)

    def _tick(self) -> Optional[defer.Deferred]:
        if self._busy:
            return None
        self._busy = True
        d = threads.deferToThreadPool(self._reactor, self._pool, self._attempt)
        d.addCallback(self._result)
        d.addErrback(lambda f: logger.warning("advisory lock %s check failed: %s", self._name, f.getErrorMessage()))
        d.addBoth(self._done)
        return None

    def _done(self, _: Any) -> None:
        self._busy = False

    def _attempt(self) -> bool:
        """Runs on the lock's own thread: is the lock held after this call?"""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self._dsn, application_name=f"estuary-lock-{self._name}", connect_timeout=5)
                self._conn.autocommit = True
                self.held = False
            with self._conn.cursor() as cur:
                if self.held:
                    cur.execute("SELECT 1")
                    return True
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                return bool(cur.fetchone()[0])
        except psycopg2.Error:
            self._close_connection()
            return False

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None

    def _result(self, held_now: bool) -> None:
        if held_now and not self.held:
            self.held = True
            logger.info("acquired advisory lock %s", self._name)
            self._on_acquired()
        elif not held_now and self.held:
            self.held = False
            logger.warning("lost advisory lock %s", self._name)
            self._on_lost()

    def stop(self) -> defer.Deferred:
        """Release the lock (by closing the session) and stop trying."""
        if self._loop.running:
            self._loop.stop()

        d = threads.deferToThreadPool(self._reactor, self._pool, self._close_connection)

        def finish(_: Any) -> None:
            was = self.held
            self.held = False
            self._pool.stop()
            if was:
                self._on_lost()

        d.addBoth(finish)
        return d
