#!/usr/bin/env python
"""Measure registrations/s and logins/s of the in-process accounts API.

Drives the real JsonResource + handlers + stores (HTTP parsed from bytes, no
sockets) against a throwaway PostgreSQL database, with N concurrent
clients. bcrypt dominates: use --bcrypt-rounds to compare with a Synapse
configured the same way (Synapse's default is 12).

    PYTHONPATH=. python scripts/bench_accounts.py --users 200 --concurrency 16

The database is created on the test server (ESTUARY_TEST_POSTGRES, or the
local default of tests/utils/services.py) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="accounts to register, then log in")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--pool-size", type=int, default=8)
    args = parser.parse_args(argv)

    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import defer, reactor, task

    results: dict = {}

    async def run() -> None:
        import psycopg2

        from bus.ratelimit import MemoryRateLimiter
        from homeserver.config.accounts import AccountsConfig, PasswordPolicyConfig, RateLimitsConfig, RegistrationConfig
        from homeserver.handlers.passwords import PasswordHasher
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from storage.database import Database
        from storage.migrations import prepare_database
        from tests.utils.http import make_request
        from tests.utils.services import dsn_for_database, postgres_admin_dsn
        from workers.accounts import build_account_api

        admin_dsn = postgres_admin_dsn()
        name = "estuary_bench_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')  # generated hex name, not input
        conn.close()
        db = Database(dsn_for_database(name), reactor, pool_size=args.pool_size)
        try:
            await prepare_database(db)
            config = AccountsConfig(
                server_name="bench.local",
                registration=RegistrationConfig(enable_registration=True),
                password_policy=PasswordPolicyConfig(bcrypt_rounds=args.bcrypt_rounds),
                rate_limits=RateLimitsConfig(enabled=False),
            )
            reactor.getThreadPool().adjustPoolsize(maxthreads=max(4, args.concurrency))
            api = build_account_api(reactor, config, db, MemoryRateLimiter(reactor),
                                    hasher=PasswordHasher(reactor, rounds=args.bcrypt_rounds))
            resource = JsonResource(reactor)
            register_account_api(resource, api)
            site = make_site(resource, task.Clock())

            async def call(method: str, path: str, body: dict) -> int:
                resp = make_request(site, method, path, body)
                while not resp.done:
                    await task.deferLater(reactor, 0.0005, lambda: None)
                return resp.code

            async def phase(label: str, make_body, path: str) -> None:
                queue = list(range(args.users))
                codes: list[int] = []

                async def worker() -> None:
                    while queue:
                        i = queue.pop()
                        codes.append(await call("POST", path, make_body(i)))

                start = time.perf_counter()
                await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(args.concurrency)])
                elapsed = time.perf_counter() - start
                ok = sum(1 for c in codes if c == 200)
                results[label] = {"requests": len(codes), "ok": ok, "seconds": round(elapsed, 3),
                                  "per_second": round(ok / elapsed, 1)}

            password = "bench password 123"
            await phase("registrations", lambda i: {"username": f"user{i}", "password": password,
                                                    "auth": {"type": "m.login.dummy"}}, "/_matrix/client/v3/register")
            await phase("logins", lambda i: {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": f"user{i}"},
                                             "password": password}, "/_matrix/client/v3/login")
        finally:
            db.close()
            conn = psycopg2.connect(admin_dsn)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.close()

    def done(result):
        if reactor.running:
            reactor.stop()
        return result

    failures: list = []
    d = defer.ensureDeferred(run())
    d.addErrback(lambda f: failures.append(f))
    d.addBoth(done)
    reactor.run()
    if failures:
        failures[0].printTraceback()
        return 1
    print(json.dumps({"bcrypt_rounds": args.bcrypt_rounds, "concurrency": args.concurrency, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
