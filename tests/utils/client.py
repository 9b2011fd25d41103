"""Drive the accounts API end to end in-process, against a real database.

:func:`wait_for_response` polls a :class:`tests.utils.http.FakeResponse`
until complete (handlers awaiting database Deferreds answer later than the
request is written). :class:`ApiTestCase` builds the accounts object graph
and a ``Site`` per test on a PostgreSQL database emptied before each test,
and offers ``await self.request(...)`` plus helpers to register and log in
users.

Creating a database costs about half a second, more than most of these
tests, so the API tests of one process share one migrated database (named
like the per-test ones of ``tests/utils/services.py`` and dropped at exit)
and every test starts by truncating all its tables and restarting its
sequences: each test still sees an empty database.

Handlers get their own fake clock (``self.clock``, set to the current
time) so expiry can be tested by advancing it; the database runs on the
real (asyncio) reactor's thread pool.
"""

from __future__ import annotations

import atexit
import time
import uuid
from typing import Any, Optional

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.utils.http import FakeResponse, make_request
from tests.utils.spec import check_exchange

#: How long a request may take before the test fails.
DEFAULT_TIMEOUT = 20.0


async def wait_for_response(resp: FakeResponse, clock: Any = reactor, timeout: float = DEFAULT_TIMEOUT) -> FakeResponse:
    """Wait (on ``clock``) until ``resp`` is complete; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not resp.done:
        if time.monotonic() > deadline:
            raise AssertionError(f"no response within {timeout}s")
        await task.deferLater(clock, 0.001, lambda: None)
    return resp


_shared: dict[str, Any] = {}


async def shared_database() -> Any:
    """The process-wide migrated test database (created on first use, dropped at exit)."""
    if "db" in _shared:
        return _shared["db"]
    import psycopg2

    from storage.database import Database
    from storage.migrations import prepare_database
    from tests.utils.services import dsn_for_database, postgres_admin_dsn

    name = "estuary_test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(postgres_admin_dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        # The name is generated above from hex digits only.
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' LC_COLLATE \'C\' LC_CTYPE \'C\'')
    admin.close()

    def drop() -> None:
        db.close()
        conn = psycopg2.connect(postgres_admin_dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    db = Database(dsn_for_database(name), reactor, pool_size=4)
    atexit.register(drop)
    await prepare_database(db)
    _shared["db"] = db
    return db


def _empty_database(txn: Any) -> None:
    """Truncate every table but ``schema_version`` and restart every sequence."""
    txn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
    )
    tables = [r[0] for r in txn.fetchall()]
    if tables:
        from psycopg2 import sql

        txn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
    txn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
    for (seq,) in txn.fetchall():
        from psycopg2 import sql

        txn.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(seq)))


class ApiTestCase(unittest.TestCase):
    """Base class: a database, the accounts API mounted on a Site, helpers."""

    #: Overrides applied to the default ``AccountsConfig`` sections.
    registration: dict[str, Any] = {"enable_registration": True}
    sessions_overrides: dict[str, Any] = {}
    rate_limits_enabled = False
    profiles_overrides: dict[str, Any] = {}
    well_known_overrides: dict[str, Any] = {}
    password_policy_overrides: dict[str, Any] = {}
    server_name = "test.local"
    #: Validate every JSON response of a spec'd endpoint against the spec.
    check_responses_against_spec = True

    async def setUp(self) -> None:  # type: ignore[override]
        from bus.ratelimit import MemoryRateLimiter
        from homeserver.config.accounts import (
            AccountsConfig,
            PasswordPolicyConfig,
            ProfilesConfig,
            RateLimitsConfig,
            RegistrationConfig,
            SessionsConfig,
            WellKnownConfig,
        )
        from homeserver.handlers.passwords import PasswordHasher
        from homeserver.http.server import JsonResource, make_site
        from homeserver.rest.client import register_account_api
        from workers.accounts import build_account_api

        self.db = await shared_database()
        await self.db.run_interaction("empty_test_database", _empty_database)

        self.clock = task.Clock()
        self.clock.advance(time.time())
        self.config = AccountsConfig(
            server_name=self.server_name,
            registration=RegistrationConfig(**self.registration),
            password_policy=PasswordPolicyConfig(**{"bcrypt_rounds": 4, **self.password_policy_overrides}),
            sessions=SessionsConfig(**{"token_cache_ms": 0, **self.sessions_overrides}),
            rate_limits=RateLimitsConfig(enabled=self.rate_limits_enabled),
            well_known=WellKnownConfig(**self.well_known_overrides),
            profiles=ProfilesConfig(**self.profiles_overrides),
        )
        self.config = self.adjust_config(self.config)
        hasher = PasswordHasher(reactor, rounds=4, run_in_thread=lambda fn, *a: defer.succeed(fn(*a)))
        self.ratelimit_backend = MemoryRateLimiter(self.clock)
        self.api = build_account_api(self.clock, self.config, self.db, self.ratelimit_backend, hasher=hasher)
        self.resource = JsonResource(self.clock)
        register_account_api(self.resource, self.api)
        # The Site only schedules connection timeouts: keep them on fake time.
        self.site = make_site(self.resource, task.Clock())

    def adjust_config(self, config: Any) -> Any:
        """Hook for subclasses needing config beyond the class attributes."""
        return config

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        client_ip: str = "127.0.0.1",
    ) -> FakeResponse:
        """Send one request, wait for its complete response and check it against the spec."""
        resp = make_request(self.site, method, path, body, headers=headers, access_token=token, client_ip=client_ip)
        await wait_for_response(resp)
        if self.check_responses_against_spec and resp.header("Content-Type") == "application/json":
            check_exchange(method, path, resp.code, resp.json, request_body=body)
        return resp

    async def count(self, table: str) -> int:
        """Rows in ``table`` (a fixed identifier from the test itself)."""

        def txn_fn(txn: Any) -> int:
            txn.execute(f"SELECT COUNT(*) FROM {table}")  # table names come from test code only
            return txn.fetchone()[0]

        return await self.db.run_interaction("count", txn_fn)

    async def register_user(
        self, username: str = "alice", password: str = "correct horse battery", **extra: Any
    ) -> dict[str, Any]:
        """Register through ``/register`` (dummy flow); returns the response body."""
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra}
        resp = await self.request("POST", "/_matrix/client/v3/register", body)
        if resp.code != 200:
            raise AssertionError(f"registration failed: {resp.code} {resp.body!r}")
        return resp.json

    async def login(self, username: str = "alice", password: str = "correct horse battery", **extra: Any) -> dict[str, Any]:
        """Log in with a password; returns the response body."""
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": username}, "password": password, **extra}
        resp = await self.request("POST", "/_matrix/client/v3/login", body)
        if resp.code != 200:
            raise AssertionError(f"login failed: {resp.code} {resp.body!r}")
        return resp.json

    def assertError(self, resp: FakeResponse, code: int, errcode: str) -> None:
        """``resp`` is a Matrix error with this status and errcode."""
        self.assertEqual((resp.code, resp.json.get("errcode")), (code, errcode), resp.body)
