"""The Redis token bucket: atomic, shared by every limiter on the same server."""

from __future__ import annotations

import asyncio

from twisted.internet import defer
from twisted.trial import unittest

from bus.ratelimit import RedisRateLimiter
from tests.utils.services import redis_test_url


class RedisRateLimiterTests(unittest.TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        import redis.asyncio

        url = redis_test_url(self)
        self.clients = [redis.asyncio.Redis.from_url(url), redis.asyncio.Redis.from_url(url)]
        for c in self.clients:
            self.addCleanup(lambda c=c: defer.Deferred.fromFuture(asyncio.ensure_future(c.aclose())))
        # Two limiters = two processes sharing Redis.
        self.a = RedisRateLimiter(self.clients[0])
        self.b = RedisRateLimiter(self.clients[1])

    async def test_shared_bucket(self) -> None:
        """Requests through two limiters drain one bucket; the refusal carries retry_after."""
        results = []
        for i in range(4):
            limiter = self.a if i % 2 == 0 else self.b
            results.append(await limiter.acquire("login:ip:1.2.3.4", 0.5, 3))
        self.assertEqual([r.allowed for r in results], [True, True, True, False])
        self.assertGreater(results[-1].retry_after_ms, 1000)
        self.assertLessEqual(results[-1].retry_after_ms, 2000)
        other = await self.a.acquire("login:ip:5.6.7.8", 0.5, 3)
        self.assertTrue(other.allowed)

    async def test_peek_and_expiry(self) -> None:
        """cost=0 consumes nothing, and bucket keys carry a TTL (hash-tagged names)."""
        for _ in range(3):
            self.assertTrue((await self.a.acquire("k", 1.0, 2, cost=0)).allowed)
        self.assertEqual((await self.a.acquire("k", 1.0, 2, cost=0)).remaining, 2.0)
        ttl = await defer.Deferred.fromFuture(asyncio.ensure_future(self.clients[0].pttl(self.a.bucket_key("k"))))
        self.assertGreater(ttl, 0)
        self.assertEqual(self.a.bucket_key("k"), "ratelimit:{k}")

    async def test_concurrent_acquires_are_atomic(self) -> None:
        """Many concurrent requests never take more than the burst."""
        ds = [self.a.acquire("burst", 0.001, 5) for _ in range(20)] + [self.b.acquire("burst", 0.001, 5) for _ in range(20)]
        results = await defer.gatherResults(ds)
        self.assertEqual(sum(r.allowed for r in results), 5)
