"""``estuary stack``: every instance of the config as its own process.

The supervisor starts one child per instance (plus the built-in router),
restarts a child that dies with exponential backoff, and on SIGTERM/SIGINT
stops every child (SIGTERM, then SIGKILL after a grace period) before
stopping the embedded PostgreSQL and Redis it started, if any.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
from typing import Any, Callable, Optional, Sequence

import attrs
from twisted.internet import defer, protocol

from homeserver.config import HomeserverConfig

logger = logging.getLogger(__name__)


def restart_delay(attempt: int, base: float = 0.5, cap: float = 30.0, jitter: float = 0.0) -> float:
    """Seconds to wait before restart number ``attempt`` (0-based): doubling from
    ``base`` up to ``cap``, plus up to ``jitter`` of that value."""
    delay = min(cap, base * (2 ** attempt))
    return delay * (1.0 + jitter)


#: A child that ran at least this long before dying restarts from attempt 0.
STABLE_AFTER_SECONDS = 30.0
#: How long children get to exit after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0


@attrs.frozen
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


class _ChildProtocol(protocol.ProcessProtocol):
    def __init__(self, child: "Child") -> None:
        self.child = child

    def processEnded(self, reason: Any) -> None:
        self.child._ended(reason)


class Child:
    """One supervised process."""

    def __init__(self, reactor: Any, spec: ChildSpec, jitter: Callable[[], float] = random.random) -> None:
        self.reactor = reactor
        self.spec = spec
        self.jitter = jitter
        self.transport: Any = None
        self.attempt = 0
        self.started_at = 0.0
        self.stopping = False
        self.restarts = 0
        self._pending_restart: Any = None
        self._ended_waiters: list[defer.Deferred] = []

    @property
    def pid(self) -> Optional[int]:
        return self.transport.pid if self.transport is not None else None

    def start(self) -> None:
        self._pending_restart = None
        env = dict(os.environ)
        env.update(dict(self.spec.env))
        self.started_at = self.reactor.seconds()
        self.transport = self.reactor.spawnProcess(
            _ChildProtocol(self), self.spec.argv[0], list(self.spec.argv), env=env, childFDs={0: "w", 1: 1, 2: 2}
        )
        self.transport.closeStdin()
        logger.info("started %s (pid %s)", self.spec.name, self.transport.pid)

    def _ended(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.transport = None
        waiters, self._ended_waiters = self._ended_waiters, []
        for d in waiters:
            d.callback(None)
        if self.stopping:
            logger.info("%s stopped", self.spec.name)
            return
        ran = self.reactor.seconds() - self.started_at
        if ran >= STABLE_AFTER_SECONDS:
            self.attempt = 0
        delay = restart_delay(self.attempt, jitter=0.2 * self.jitter())
        self.attempt += 1
        self.restarts += 1
        logger.warning("%s exited (code %s, signal %s) after %.1fs; restarting in %.1fs", self.spec.name, code, sig, ran, delay)
        self._pending_restart = self.reactor.callLater(delay, self.start)

    def stop(self) -> defer.Deferred:
        self.stopping = True
        if self._pending_restart is not None and self._pending_restart.active():
            self._pending_restart.cancel()
        if self.transport is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._ended_waiters.append(d)
        try:
            self.transport.signalProcess("TERM")
        except Exception:
            pass
        kill = self.reactor.callLater(STOP_GRACE_SECONDS, self._kill)
        d.addBoth(lambda r: kill.cancel() if kill.active() else None)
        return d

    def _kill(self) -> None:
        if self.transport is not None:
            logger.warning("%s did not stop in %ss: killing", self.spec.name, STOP_GRACE_SECONDS)
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass


class Supervisor:
    """Starts, restarts and stops a set of children."""

    def __init__(self, reactor: Any, specs: Sequence[ChildSpec]) -> None:
        self.children = {s.name: Child(reactor, s) for s in specs}

    def start(self) -> None:
        for child in self.children.values():
            child.start()

    def stop(self) -> defer.Deferred:
        return defer.gatherResults([c.stop() for c in self.children.values()], consumeErrors=True)


def child_specs(config: HomeserverConfig, config_path: str, env: dict[str, str], router: bool, log_level: str) -> list[ChildSpec]:
    base = (sys.executable, "-m", "workers", "--log-level", log_level)
    env_items = tuple(sorted(env.items()))
    specs = [ChildSpec(name, base + ("run", "--config", config_path, "--instance", name), env_items) for name in sorted(config.instances)]
    if router:
        specs.append(ChildSpec("router", base + ("router", "--config", config_path), env_items))
    return specs


def run_stack(reactor: Any, config: HomeserverConfig, config_path: str, router: bool = True, log_level: str = "INFO") -> int:
    """Provision what is missing, run every child, and block until a signal."""
    from workers.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis

    services: list[Any] = []
    env: dict[str, str] = {}
    try:
        if not config.database.dsn:
            pg = EmbeddedPostgres(os.path.join(config.data_dir, "postgres"))
            pg.start()
            services.append(pg)
            env["ESTUARY_DATABASE_DSN"] = pg.create_database("estuary")
            logger.info("embedded PostgreSQL on 127.0.0.1:%s (%s)", pg.port, pg.directory)
        if not config.redis.url:
            rd = EmbeddedRedis(os.path.join(config.data_dir, "redis"))
            rd.start()
            services.append(rd)
            env["ESTUARY_REDIS_URL"] = rd.url
            logger.info("embedded Redis on 127.0.0.1:%s", rd.port)
    except EmbeddedError as e:
        for s in reversed(services):
            s.stop()
        print(f"estuary: {e}", file=sys.stderr)
        return 1

    supervisor = Supervisor(reactor, child_specs(config, os.path.abspath(config_path), env, router, log_level))
    reactor.callWhenRunning(supervisor.start)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    try:
        reactor.run()
    finally:
        for s in reversed(services):
            s.stop()
    return 0
