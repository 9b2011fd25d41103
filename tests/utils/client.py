"""Drive the accounts API end to end in-process, against a real database.

:func:`wait_for_response` polls a :class:`tests.utils.http.FakeResponse`
until complete (handlers awaiting database Deferreds answer later than the
request is written). :class:`ApiTestCase` builds a fresh PostgreSQL
database, the accounts object graph and a ``Site`` per test, and offers
``await self.request(...)`` plus helpers to register and log in users.

Handlers get their own fake clock (``self.clock``, set to the current
time) so expiry can be tested by advancing it; the database runs on the
real (asyncio) reactor's thread pool.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.utils.http import FakeResponse, make_request

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
        from storage.database import Database
        from storage.migrations import prepare_database
        from tests.utils.services import create_test_database
        from workers.accounts import build_account_api

        dsn = create_test_database(self)
        self.db = Database(dsn, reactor, pool_size=4)
        self.addCleanup(self.db.close)
        await prepare_database(self.db)

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
        """Send one request and wait for its complete response."""
        resp = make_request(self.site, method, path, body, headers=headers, access_token=token, client_ip=client_ip)
        return await wait_for_response(resp)

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
