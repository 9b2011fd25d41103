"""The built-in reverse proxy for local runs (``estuary router``).

It routes by :data:`workers.routes.ROUTES`, exactly as the generated nginx
config does, and keeps each instance in or out of rotation by polling its
``/_estuary/ready``. Production deployments put nginx (or another proxy
configured from the same table) in front instead; this one exists so that a
laptop or a test runs the real multi-process shape with no extra software.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any, Optional, Sequence
from urllib.parse import unquote

from twisted.internet import defer, protocol
from twisted.internet.task import LoopingCall
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from homeserver.config import HomeserverConfig, InstanceConfig
from homeserver.sharding import shard_for
from workers.routes import Affinity, RouteMatch, match_route

logger = logging.getLogger(__name__)

#: Headers that belong to one hop and are not forwarded.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
    b"host",
}


#: The router's own status page: which instances are in rotation.
STATUS_PATH = "/_estuary/router"


def rendezvous_pick(key: str, candidates: Sequence[InstanceConfig]) -> InstanceConfig:
    """Highest-random-weight choice: stable per key, and when an instance
    leaves rotation only the keys it held move elsewhere."""

    def weight(inst: InstanceConfig) -> bytes:
        return hashlib.blake2b(f"{inst.name}\0{key}".encode(), digest_size=8).digest()

    return max(candidates, key=weight)


class HealthTracker:
    """Polls every instance's readiness endpoint; answers "is X in rotation"."""

    def __init__(self, reactor: Any, agent: Agent, instances: Sequence[InstanceConfig], interval: float, timeout: float = 2.0) -> None:
        self._reactor = reactor
        self._agent = agent
        self._instances = list(instances)
        self._interval = interval
        self._timeout = timeout
        self._healthy: set[str] = set()
        self._loop = LoopingCall(self.check_all)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def is_healthy(self, name: str) -> bool:
        return name in self._healthy

    def status(self) -> dict[str, bool]:
        """Every instance and whether it is in rotation."""
        return {i.name: i.name in self._healthy for i in self._instances}

    def mark_unhealthy(self, name: str) -> None:
        """Take an instance out until its next successful probe."""
        if name in self._healthy:
            logger.warning("instance %s out of rotation (proxy error)", name)
        self._healthy.discard(name)

    def check_all(self) -> defer.Deferred:
        return defer.gatherResults([defer.ensureDeferred(self._check(i)) for i in self._instances], consumeErrors=True)

    async def _check(self, inst: InstanceConfig) -> None:
        ok = False
        try:
            d = self._agent.request(b"GET", (inst.http_base + "/_estuary/ready").encode())
            d.addTimeout(self._timeout, self._reactor)
            resp = await d
            await readBody(resp)
            ok = resp.code == 200
        except Exception:
            ok = False
        was = inst.name in self._healthy
        if ok and not was:
            logger.info("instance %s in rotation", inst.name)
            self._healthy.add(inst.name)
        elif not ok and was:
            logger.warning("instance %s out of rotation (not ready)", inst.name)
            self._healthy.discard(inst.name)


class NoInstance(Exception):
    """No healthy instance can take the request."""


class Balancer:
    """Chooses the instance for a matched route."""

    def __init__(self, config: HomeserverConfig, health: HealthTracker) -> None:
        self._config = config
        self._health = health
        self._rr: dict[str, int] = {}

    def choose(self, match: RouteMatch, token: Optional[str]) -> InstanceConfig:
        rule = match.rule
        role_instances = sorted(self._config.instances_with_role(rule.role), key=lambda i: i.name)
        healthy = [i for i in role_instances if self._health.is_healthy(i.name)]
        if rule.affinity in (Affinity.ROOM, Affinity.USER) and match.key and rule.stream:
            sigil = "!" if rule.affinity is Affinity.ROOM else "@"
            if match.key.startswith(sigil):
                count = self._config.stream_shards[rule.stream]
                owner = self._config.shard_owner(rule.stream, shard_for(match.key, count))
                if self._health.is_healthy(owner.name):
                    return owner
                # The owner is down: another writer takes the request and its
                # forward to the owner fails cleanly, or waits for it; either way
                # the client gets an answer rather than a hang here.
        if not healthy:
            raise NoInstance(rule.role)
        if rule.affinity is Affinity.TOKEN and token:
            return rendezvous_pick(token, healthy)
        n = self._rr.get(rule.role, 0)
        self._rr[rule.role] = n + 1
        return healthy[n % len(healthy)]


class _BodyStreamer(protocol.Protocol):
    """Copies an upstream response body into the client's request."""

    def __init__(self, request: server.Request, finished: defer.Deferred) -> None:
        self._request = request
        self._finished = finished

    def dataReceived(self, data: bytes) -> None:
        if not self._request._disconnected:
            self._request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._finished.callback(None)


def _error(request: server.Request, code: int, errcode: str, msg: str) -> None:
    if request._disconnected:
        # The client is gone (e.g. gave up on a long-poll): nobody to answer,
        # and finish() on a lost connection raises.
        return
    body = json.dumps({"errcode": errcode, "error": msg}).encode()
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.write(body)
    request.finish()


class RouterResource(resource.Resource):
    """Proxies each request to the instance the route table picks."""

    isLeaf = True

    def __init__(self, reactor: Any, agent: Agent, balancer: Balancer, health: HealthTracker) -> None:
        super().__init__()
        self._reactor = reactor
        self._agent = agent
        self._balancer = balancer
        self._health = health

    def render(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._proxy(request))
        return server.NOT_DONE_YET

    async def _proxy(self, request: server.Request) -> None:
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        if path == STATUS_PATH:
            body = json.dumps({"instances": self._health.status()}).encode()
            request.setHeader(b"Content-Type", b"application/json")
            request.write(body)
            request.finish()
            return
        match = match_route(method, unquote(path))
        if match is None:
            _error(request, 404, "M_UNRECOGNIZED", "Unrecognized request")
            return
        token = _token(request)
        try:
            inst = self._balancer.choose(match, token)
        except NoInstance as e:
            _error(request, 503, "M_UNKNOWN", f"No {e.args[0]} instance is available")
            return

        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        peer = request.getClientAddress()
        forwarded = request.getHeader(b"x-forwarded-for")
        client = getattr(peer, "host", "unknown")
        headers.setRawHeaders(b"X-Forwarded-For", [(forwarded.decode() + ", " if forwarded else "") .encode() + client.encode()])
        headers.setRawHeaders(b"X-Forwarded-Proto", [b"https" if request.isSecure() else b"http"])
        host = request.getHeader(b"host")
        if host:
            headers.setRawHeaders(b"X-Forwarded-Host", [host])

        request.content.seek(0)
        body = request.content.read()
        producer = FileBodyProducer(io.BytesIO(body)) if body else None
        url = inst.http_base.encode() + request.uri
        try:
            resp: IResponse = await self._agent.request(request.method, url, headers, producer)
        except Exception as e:
            logger.warning("proxy to %s failed: %s", inst.name, e)
            self._health.mark_unhealthy(inst.name)
            _error(request, 502, "M_UNKNOWN", f"Instance {inst.name} did not answer")
            return
        request.setResponseCode(resp.code, resp.phrase)
        for name, values in resp.headers.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP:
                request.responseHeaders.setRawHeaders(name, values)
        if resp.length is not None and resp.length is not UNKNOWN_LENGTH:
            request.setHeader(b"Content-Length", str(resp.length).encode())
        finished: defer.Deferred = defer.Deferred()
        resp.deliverBody(_BodyStreamer(request, finished))
        await finished
        if not request._disconnected:
            request.finish()


def _token(request: server.Request) -> Optional[str]:
    auth = request.getHeader(b"authorization")
    if auth:
        return auth.decode("latin-1")
    vals = request.args.get(b"access_token")
    return vals[-1].decode("latin-1") if vals else None


def build_router(reactor: Any, config: HomeserverConfig) -> tuple[server.Site, HealthTracker]:
    """The router's Site and its health tracker (started by the caller)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64
    pool.cachedConnectionTimeout = 120
    agent = Agent(reactor, pool=pool, connectTimeout=5)
    health = HealthTracker(reactor, agent, list(config.instances.values()), config.router.health_interval_seconds)
    balancer = Balancer(config, health)
    root = RouterResource(reactor, agent, balancer, health)
    site = server.Site(root, reactor=reactor)
    site.log = lambda request: None  # type: ignore[method-assign]
    return site, health
