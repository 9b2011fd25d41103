#!/usr/bin/env python
"""Measure registrations/s and logins/s of the accounts API.

Three ways to drive it, with the same workload (N accounts registered with
the m.login.dummy flow, then each logged in once with its password, by C
concurrent clients):

- in-process (default): Estuary's real JsonResource + handlers + stores,
  HTTP parsed from bytes, no sockets, on a throwaway PostgreSQL database;
- ``--http``: the same in-process server, but listening on a local port and
  driven over real HTTP connections (comparable with the next mode);
- ``--url URL``: any running homeserver over HTTP (e.g. a Synapse with open
  registration and rate limits off), for comparison.

bcrypt dominates: compare at the same cost (``--bcrypt-rounds``; Synapse's
default is 12).

    PYTHONPATH=. python scripts/bench_accounts.py --users 200 --concurrency 16
    PYTHONPATH=. python scripts/bench_accounts.py --url http://127.0.0.1:8008

The in-process database is created on the test server (ESTUARY_TEST_POSTGRES,
or the local default of tests/utils/services.py) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any, Awaitable, Callable

Call = Callable[[str, dict], Awaitable[int]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="accounts to register, then log in")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="in-process modes only")
    parser.add_argument("--pool-size", type=int, default=8, help="in-process modes only")
    parser.add_argument("--http", action="store_true", help="serve in-process on a local port, drive over HTTP")
    parser.add_argument("--url", default=None, help="bench a running homeserver at this base URL instead")
    args = parser.parse_args(argv)

    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import defer, reactor

    results: dict[str, Any] = {}

    async def run() -> None:
        if args.url:
            results["target"] = args.url
            await workload(http_caller(args.url.rstrip("/")), args, results)
            return
        async with InProcessServer(args) as server:
            if args.http:
                port = reactor.listenTCP(0, server.site, interface="127.0.0.1")
                try:
                    results["target"] = "estuary in-process over HTTP"
                    await workload(http_caller(f"http://127.0.0.1:{port.getHost().port}"), args, results)
                finally:
                    await port.stopListening()
            else:
                results["target"] = "estuary in-process (no sockets)"
                await workload(server.call, args, results)

    failures: list = []
    d = defer.ensureDeferred(run())
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].printTraceback()
        return 1
    print(json.dumps({"concurrency": args.concurrency, **results}, indent=2))
    return 0


async def workload(call: Call, args: Any, results: dict[str, Any]) -> None:
    """Register ``args.users`` accounts, then log each in once; record rates."""
    from twisted.internet import defer

    prefix = "bench" + uuid.uuid4().hex[:6]
    password = "bench password 123"

    async def phase(label: str, path: str, make_body: Callable[[int], dict]) -> None:
        queue = list(range(args.users))
        codes: list[int] = []

        async def worker() -> None:
            while queue:
                codes.append(await call(path, make_body(queue.pop())))

        start = time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(args.concurrency)])
        elapsed = time.perf_counter() - start
        ok = sum(1 for c in codes if c == 200)
        results[label] = {"requests": len(codes), "ok": ok, "seconds": round(elapsed, 3), "per_second": round(ok / elapsed, 1)}

    await phase("registrations", "/_matrix/client/v3/register",
                lambda i: {"username": f"{prefix}{i}", "password": password, "auth": {"type": "m.login.dummy"},
                           "initial_device_display_name": "bench"})
    await phase("logins", "/_matrix/client/v3/login",
                lambda i: {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": f"{prefix}{i}"},
                           "password": password})


def http_caller(base_url: str) -> Call:
    """POST JSON over real HTTP connections (a persistent pool)."""
    import treq
    from twisted.internet import reactor
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 64

    async def call(path: str, body: dict) -> int:
        resp = await treq.post(base_url + path, json=body, pool=pool)
        await resp.content()
        return resp.code

    return call


class InProcessServer:
    """Estuary's accounts API on a throwaway database (async context manager)."""

    def __init__(self, args: Any) -> None:
        self.args = args

    async def __aenter__(self) -> "InProcessServer":
        import psycopg2
        from twisted.internet import reactor, task

        from bus.ratelimit import MemoryRateLimiter
        from homeserver.config.accounts import AccountsConfig, PasswordPolicyConfig, RateLimitsConfig, RegistrationConfig
        from homeserver.handlers.passwords import PasswordHasher
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from storage.database import Database
        from storage.migrations import prepare_database
        from tests.utils.services import dsn_for_database, postgres_admin_dsn
        from workers.accounts import build_account_api

        self._admin_dsn = postgres_admin_dsn()
        self._name = "estuary_bench_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(self._admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self._name}"')  # generated hex name, not input
        conn.close()
        self.db = Database(dsn_for_database(self._name), reactor, pool_size=self.args.pool_size)
        await prepare_database(self.db)
        config = AccountsConfig(
            server_name="bench.local",
            registration=RegistrationConfig(enable_registration=True),
            password_policy=PasswordPolicyConfig(bcrypt_rounds=self.args.bcrypt_rounds),
            rate_limits=RateLimitsConfig(enabled=False),
        )
        reactor.getThreadPool().adjustPoolsize(maxthreads=max(4, self.args.concurrency))
        api = build_account_api(reactor, config, self.db, MemoryRateLimiter(reactor),
                                hasher=PasswordHasher(reactor, rounds=self.args.bcrypt_rounds))
        resource = JsonResource(reactor)
        register_account_api(resource, api)
        self.site = make_site(resource, reactor)
        return self

    async def call(self, path: str, body: dict) -> int:
        """One request through the in-memory transport."""
        from twisted.internet import reactor, task

        from tests.utils.http import make_request

        resp = make_request(self.site, "POST", path, body)
        while not resp.done:
            await task.deferLater(reactor, 0.0005, lambda: None)
        return resp.code

    async def __aexit__(self, *exc: Any) -> None:
        import psycopg2

        self.db.close()
        conn = psycopg2.connect(self._admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
