"""The ``background`` role: periodic jobs run by exactly one instance.

Several instances may carry the role (for failover); a PostgreSQL
advisory lock decides which one is active. Jobs start when the lock is
gained and stop when it is lost, so two instances never run them at once.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import attrs
from prometheus_client import Gauge
from twisted.internet import defer
from twisted.internet.task import LoopingCall

logger = logging.getLogger(__name__)

ACTIVE = Gauge("estuary_background_active", "1 while this instance holds the background lock")

LOCK_NAME = "estuary:background"


@attrs.frozen
class Job:
    """A periodic job: ``run()`` every ``interval`` seconds while active."""

    name: str
    interval: float
    run: Callable[[], Awaitable[Any]]


class BackgroundRunner:
    """Starts the jobs while the lock is held."""

    def __init__(self, reactor: Any, lock_factory: Callable[[Callable[[], None], Callable[[], None]], Any], jobs: list[Job]) -> None:
        self._reactor = reactor
        self._jobs = list(jobs)
        self._loops: list[LoopingCall] = []
        self._lock = lock_factory(self._activate, self._deactivate)

    @property
    def active(self) -> bool:
        return bool(self._loops)

    def start(self) -> None:
        self._lock.start()

    def stop(self) -> defer.Deferred:
        self._deactivate()
        return self._lock.stop()

    def _activate(self) -> None:
        ACTIVE.set(1)
        logger.info("background jobs active: %s", ", ".join(j.name for j in self._jobs) or "none registered")
        for job in self._jobs:
            loop = LoopingCall(self._run_job, job)
            loop.clock = self._reactor
            loop.start(job.interval, now=True)
            self._loops.append(loop)

    def _deactivate(self) -> None:
        ACTIVE.set(0)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []

    def _run_job(self, job: Job) -> defer.Deferred:
        d = defer.ensureDeferred(job.run())
        d.addErrback(lambda f: logger.error("background job %s failed: %s", job.name, f.getTraceback()))
        return d
