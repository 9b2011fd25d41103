"""One Estuary process: the object graph for an instance and its listeners.

``workers`` is the only package that picks concrete implementations and
wires them together (STYLE.md): the database, the bus, the handlers of each
role, and the HTTP listeners. Everything below receives what it needs as
constructor arguments.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from typing import Any, Optional

import attrs
from prometheus_client import REGISTRY, CONTENT_TYPE_LATEST, Gauge, generate_latest
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.web import server

from homeserver.config import ConfigError, HomeserverConfig, InstanceConfig
from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, RawResponse, header, make_site
from workers.roles import ROLE_SPECS

logger = logging.getLogger(__name__)

READY = Gauge("estuary_ready", "1 when the database and the bus answer, else 0")
START_TIME = Gauge("estuary_start_time_seconds", "When this process started (unix time)")


@attrs.define
class ProcessContext:
    """What a role's mount function may use to build its handlers."""

    reactor: Any
    config: HomeserverConfig
    instance: InstanceConfig
    database: Any
    bus: Any
    #: Runs a command on the owner of its shard (locally or forwarded).
    dispatcher: Any = None
    #: Called (and awaited if they return a Deferred) when the process stops.
    stop_hooks: list[Any] = attrs.Factory(list)
    #: Feature object graphs built once per process (several roles share them).
    features: dict[str, Any] = attrs.Factory(dict)

    def on_stop(self, hook: Any) -> None:
        self.stop_hooks.append(hook)


class ReadinessProbe:
    """Answers whether the database and the bus are reachable right now."""

    def __init__(self, reactor: Any, database: Any, bus: Any, timeout: float = 2.0) -> None:
        self._reactor = reactor
        self._database = database
        self._bus = bus
        self._timeout = timeout

    async def check(self) -> dict[str, bool]:
        async def probe(fn: Any) -> bool:
            try:
                d = defer.maybeDeferred(fn)
                d.addTimeout(self._timeout, self._reactor)
                result = await d
                return result is not False
            except Exception:
                return False

        db_ok, bus_ok = await defer.gatherResults(
            [defer.ensureDeferred(probe(self._database.ping)), defer.ensureDeferred(probe(self._bus.ping))]
        )
        READY.set(1 if db_ok and bus_ok else 0)
        return {"database": db_ok, "bus": bus_ok}


def mount_common(resource: JsonResource, instance: InstanceConfig, probe: ReadinessProbe) -> None:
    """``/health``, ``/_estuary/ready`` and ``/metrics`` on every instance."""

    async def health(request: Any) -> tuple[int, Any]:
        return 200, {"status": "ok", "instance": instance.name, "pid": os.getpid()}

    async def ready(request: Any) -> tuple[int, Any]:
        checks = await probe.check()
        ok = all(checks.values())
        return (200 if ok else 503), {"ready": ok, "instance": instance.name, "checks": checks}

    async def metrics(request: Any) -> RawResponse:
        return RawResponse(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode("ascii"))

    resource.register("GET", "/health", health, name="health")
    resource.register("GET", "/_estuary/ready", ready, name="ready")
    resource.register("GET", "/metrics", metrics, name="metrics")


def replication_auth(secret: str):
    """A decorator for internal replication handlers: constant-time check of
    ``Authorization: Bearer <replication secret>``."""
    import hmac

    expected = secret.encode("utf-8")

    def wrap(handler: Any) -> Any:
        async def checked(request: Any, **kwargs: Any) -> Any:
            auth = header(request, "Authorization") or ""
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode("utf-8"), expected):
                raise MatrixError(403, Codes.FORBIDDEN, "Invalid replication secret")
            return await handler(request, **kwargs)

        checked.__name__ = getattr(handler, "__name__", "replication")
        return checked

    return wrap


#: How long a stopping process lets in-flight requests finish before it closes the bus and the database.
DRAIN_SECONDS = 5.0


class DrainingRequest(server.Request):
    """A request its site counts while in flight, refused with a 503 once the site is draining."""

    def refuse_for_shutdown(self) -> None:
        """Answer 503 (if nothing was sent yet) and close the connection: the client retries elsewhere."""
        channel = getattr(self, "channel", None)
        transport = getattr(channel, "transport", None)
        if not self._disconnected and not self.finished:
            if not self.startedWriting:
                body = json.dumps({"errcode": Codes.UNKNOWN, "error": "This instance is shutting down"}).encode()
                self.setResponseCode(503)
                self.setHeader(b"Content-Type", b"application/json")
                self.setHeader(b"Content-Length", str(len(body)).encode())
                self.setHeader(b"Connection", b"close")
                self.write(body)
            self.finish()
        if transport is not None:
            transport.loseConnection()

    def process(self) -> None:
        site = self.channel.site
        if getattr(site, "draining", False):
            self.refuse_for_shutdown()
            return
        in_flight = site.in_flight
        in_flight.add(self)
        self.notifyFinish().addBoth(lambda _: in_flight.discard(self))
        super().process()


def draining_site(root: Any, reactor: Any) -> server.Site:
    """:func:`make_site` whose requests are tracked for a graceful stop (see :meth:`EstuaryProcess.stop`)."""
    site = make_site(root, reactor)
    site.requestFactory = DrainingRequest
    site.in_flight = set()  # type: ignore[attr-defined]
    site.draining = False  # type: ignore[attr-defined]
    return site


class EstuaryProcess:
    """Starts and stops everything one instance runs."""

    def __init__(self, reactor: Any, config: HomeserverConfig, instance: InstanceConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.instance = instance
        self.database: Any = None
        self.bus: Any = None
        self.ports: list[Any] = []
        self.sites: list[server.Site] = []
        self.context: Optional[ProcessContext] = None

    async def start(self) -> None:
        START_TIME.set(time.time())
        from homeserver.state import log_implementation

        log_implementation()
        dsn = self.config.database.dsn
        if not dsn:
            raise ConfigError("database.dsn", "is required to run an instance on its own (estuary stack provides an embedded one)")
        if not self.config.redis.url:
            raise ConfigError("redis.url", "is required to run an instance on its own (estuary stack provides an embedded one)")

        from bus import Bus
        from storage.database import Database
        from storage.migrations import prepare_database
        from storage.streams import ensure_stream_shards

        self.database = Database(
            dsn,
            self.reactor,
            self.config.database.pool_size,
            application_name=f"estuary-{self.instance.name}",
            prepared_statements=self.config.database.prepared_statements,
        )
        version = await prepare_database(self.database)
        await ensure_stream_shards(self.database, self.config.stream_shards)
        logger.info("database ready (schema version %s)", version)
        self.bus = Bus.from_url(self.config.redis.url, self.reactor)

        from homeserver.replication import CommandDispatcher
        from workers.replication import HttpReplicationClient, mount_replication_server

        client = HttpReplicationClient(self.reactor, self.config.replication_secret)
        dispatcher = CommandDispatcher(self.config, self.instance.name, client)
        self.context = ProcessContext(self.reactor, self.config, self.instance, self.database, self.bus, dispatcher)
        self.context.on_stop(client.close)
        probe = ReadinessProbe(self.reactor, self.database, self.bus)

        main = JsonResource(self.reactor)
        mount_common(main, self.instance, probe)
        for role in sorted(self.instance.roles):
            result = ROLE_SPECS[role].mount(self.context, main)
            if inspect.isawaitable(result):
                await result

        replication = JsonResource(self.reactor, cors=False)
        mount_common(replication, self.instance, probe)
        mount_replication_server(replication, dispatcher, self.config.replication_secret)

        host, port = self.instance.listen
        self.sites = [draining_site(main, self.reactor), draining_site(replication, self.reactor)]
        for site in self.sites:
            site.trusted_proxies = self.config.router.trusted_proxies  # type: ignore[attr-defined]
        self.ports.append(self.reactor.listenTCP(port, self.sites[0], interface=host))
        rhost, rport = self.instance.replication_listen
        self.ports.append(self.reactor.listenTCP(rport, self.sites[1], interface=rhost))
        if self.instance.metrics_listen is not None:
            metrics_only = JsonResource(self.reactor, cors=False)
            mount_common(metrics_only, self.instance, probe)
            mhost, mport = self.instance.metrics_listen
            self.ports.append(self.reactor.listenTCP(mport, make_site(metrics_only, self.reactor), interface=mhost))
        logger.info(
            "instance %s (%s) listening on %s:%s, replication on %s:%s, pid %s",
            self.instance.name, ", ".join(sorted(self.instance.roles)), host, port, rhost, rport, os.getpid(),
        )

    async def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Stop gracefully: refuse new requests, let those in flight finish (up to
        ``drain_seconds``; long-polls are cut then), run the stop hooks, close
        the bus and the database. Requests must finish before the bus closes:
        an event committed after it would only reach consumers by gap catch-up."""
        for port in self.ports:
            await port.stopListening()
        self.ports = []
        for site in self.sites:
            site.draining = True  # type: ignore[attr-defined]
        deadline = self.reactor.seconds() + drain_seconds
        while any(site.in_flight for site in self.sites) and self.reactor.seconds() < deadline:  # type: ignore[attr-defined]
            await deferLater(self.reactor, 0.05, lambda: None)
        left = [request for site in self.sites for request in site.in_flight]  # type: ignore[attr-defined]
        if left:
            logger.info("stopping with %d request(s) still in flight (long-polls): answering 503", len(left))
            for request in left:
                request.refuse_for_shutdown()
        if self.context is not None:
            for hook in reversed(self.context.stop_hooks):
                try:
                    await defer.maybeDeferred(hook)
                except Exception:
                    logger.exception("stop hook failed")
        if self.bus is not None:
            await defer.maybeDeferred(self.bus.close)
        if self.database is not None:
            self.database.close()
