"""The internal replication API over HTTP: server endpoint and client.

``POST /_estuary/replication/command/{command}`` on an instance's
``replication_listen`` carries ``{"key": ..., "args": {...}}`` and answers
the command's JSON result, or a Matrix error body with its status. Requests
carry ``Authorization: Bearer <replication.secret>``, compared in constant
time. The listener is never routed publicly.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import treq
from prometheus_client import Counter
from twisted.internet import defer, task
from twisted.web.client import HTTPConnectionPool

from homeserver.errors import Codes, MatrixError
from homeserver.http.server import JsonResource, parse_json_object
from homeserver.replication import CommandDispatcher
from workers.app import replication_auth

logger = logging.getLogger(__name__)

FORWARDED = Counter("estuary_replication_forwarded_total", "Commands forwarded to a shard owner", ["command", "outcome"])

PATH = "/_estuary/replication/command/{command}"


def mount_replication_server(resource: JsonResource, dispatcher: CommandDispatcher, secret: str) -> None:
    """Serve forwarded commands on the replication listener."""

    @replication_auth(secret)
    async def command(request: Any, command: str) -> tuple[int, Any]:
        body = parse_json_object(request)
        key = body.get("key")
        args = body.get("args")
        if not isinstance(key, str) or not isinstance(args, dict):
            raise MatrixError(400, Codes.BAD_JSON, "expected {key: string, args: object}")
        result = await dispatcher.run_local(command, key, args)
        return 200, result

    resource.register("POST", PATH, command, name="replication_command")


class HttpReplicationClient:
    """Forwards commands to their owner, retrying when the owner is unreachable.

    Retries happen only when no answer came back (connection refused, reset
    or timed out): the owner may be restarting. Commands are idempotent, so a
    retry after a lost answer is safe. A Matrix error answered by the owner
    is raised as such, not retried.
    """

    def __init__(self, reactor: Any, secret: str, timeout: float = 30.0, attempts: int = 6, base_delay: float = 0.2) -> None:
        self._reactor = reactor
        self._secret = secret
        self._timeout = timeout
        self._attempts = attempts
        self._base_delay = base_delay
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 16
        self._pool = pool

    async def call(self, instance: Any, command: str, stream: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        url = instance.replication_base + PATH.format(command=command)
        body = json.dumps({"key": key, "args": args}).encode("utf-8")
        headers = {b"Authorization": [f"Bearer {self._secret}".encode()], b"Content-Type": [b"application/json"]}
        last_error: Exception | None = None
        for attempt in range(self._attempts):
            try:
                d = treq.post(url, data=body, headers=headers, pool=self._pool, reactor=self._reactor)
                d.addTimeout(self._timeout, self._reactor)
                resp = await d
                payload = await treq.json_content(resp)
            except Exception as e:  # no answer: the owner may be restarting
                last_error = e
                FORWARDED.labels(command, "retry").inc()
                await task.deferLater(self._reactor, self._base_delay * (2**attempt), lambda: None)
                continue
            if resp.code == 200:
                FORWARDED.labels(command, "ok").inc()
                return payload
            FORWARDED.labels(command, "refused").inc()
            errcode = payload.get("errcode", Codes.UNKNOWN) if isinstance(payload, dict) else Codes.UNKNOWN
            error = payload.get("error", "") if isinstance(payload, dict) else ""
            extra = {k: v for k, v in payload.items() if k not in ("errcode", "error")} if isinstance(payload, dict) else {}
            raise MatrixError(resp.code, errcode, error, **extra)
        FORWARDED.labels(command, "unreachable").inc()
        logger.warning("shard owner %s unreachable for %s: %s", instance.name, command, last_error)
        raise MatrixError(503, Codes.UNKNOWN, f"The instance owning this room or user ({instance.name}) is unavailable; retry shortly")

    def close(self) -> defer.Deferred:
        return self._pool.closeCachedConnections()
