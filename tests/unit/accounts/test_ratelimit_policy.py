"""The Matrix rate-limit policy over the in-memory bucket."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from bus.ratelimit import MemoryRateLimiter
from homeserver.config.accounts import RateLimit, RateLimitsConfig
from homeserver.errors import MatrixError
from homeserver.handlers.auth import Requester
from homeserver.handlers.ratelimit import RateLimiter


def requester(admin: bool = False) -> Requester:
    return Requester("@u:hs", "D", False, 1, admin)


class PolicyTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.config = RateLimitsConfig(
            login_per_address=RateLimit(1.0, 2),
            message_per_user=RateLimit(0.5, 1),
            join_per_user=RateLimit(0.5, 1),
            login_failed_attempts=RateLimit(0.1, 2),
            exempt_addresses=("10.0.0.1",),
        )
        self.limiter = RateLimiter(MemoryRateLimiter(self.clock), self.config)

    def run_check(self, coro) -> MatrixError | None:
        d = defer.ensureDeferred(coro)
        failures = []
        d.addErrback(lambda f: failures.append(f.trap(MatrixError) and f.value))
        self.successResultOf(d)
        return failures[0] if failures else None

    def test_login_per_address(self) -> None:
        """Past the burst, logins from one address get 429 M_LIMIT_EXCEEDED with retry_after_ms."""
        self.assertIsNone(self.run_check(self.limiter.check_login_address("1.1.1.1")))
        self.assertIsNone(self.run_check(self.limiter.check_login_address("1.1.1.1")))
        err = self.run_check(self.limiter.check_login_address("1.1.1.1"))
        self.assertEqual((err.code, err.errcode, err.to_json()["retry_after_ms"]), (429, "M_LIMIT_EXCEEDED", 1000))
        self.assertIsNone(self.run_check(self.limiter.check_login_address("2.2.2.2")))
        self.clock.advance(1)
        self.assertIsNone(self.run_check(self.limiter.check_login_address("1.1.1.1")))

    def test_exempt_address(self) -> None:
        """Listed addresses are never limited."""
        for _ in range(10):
            self.assertIsNone(self.run_check(self.limiter.check_login_address("10.0.0.1")))

    def test_admins_exempt_from_per_user_limits(self) -> None:
        """Messages and joins are limited per user, except for admins."""
        self.assertIsNone(self.run_check(self.limiter.check_message(requester())))
        self.assertEqual(self.run_check(self.limiter.check_message(requester())).code, 429)
        self.assertIsNone(self.run_check(self.limiter.check_join(requester())))
        self.assertEqual(self.run_check(self.limiter.check_join(requester())).code, 429)
        for _ in range(5):
            self.assertIsNone(self.run_check(self.limiter.check_message(requester(admin=True))))

    def test_failed_logins(self) -> None:
        """Only failures drain the failed-login bucket; checking it takes nothing."""
        for _ in range(5):
            self.assertIsNone(self.run_check(self.limiter.check_failed_login("@a:hs")))
        self.successResultOf(defer.ensureDeferred(self.limiter.record_failed_login("@a:hs")))
        self.successResultOf(defer.ensureDeferred(self.limiter.record_failed_login("@a:hs")))
        self.assertEqual(self.run_check(self.limiter.check_failed_login("@a:hs")).code, 429)

    def test_disabled(self) -> None:
        """With rate limiting disabled nothing is refused."""
        limiter = RateLimiter(MemoryRateLimiter(self.clock), RateLimitsConfig(enabled=False, message_per_user=RateLimit(0.01, 1)))
        for _ in range(5):
            self.assertIsNone(self.run_check(limiter.check_message(requester())))

    def test_backend_failure_fails_open(self) -> None:
        """A broken backend lets requests through rather than refusing everyone."""

        class Broken:
            def acquire(self, *a):
                return defer.fail(ConnectionError("redis down"))

        limiter = RateLimiter(Broken(), self.config)
        self.assertIsNone(self.run_check(limiter.check_login_address("1.1.1.1")))
