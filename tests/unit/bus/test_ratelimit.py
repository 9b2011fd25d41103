"""The in-memory token bucket and the pure refill/take arithmetic."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from bus.ratelimit import MemoryRateLimiter, refill, take


class ArithmeticTests(unittest.SynchronousTestCase):
    def test_refill_caps_at_burst(self) -> None:
        """Refill adds rate*elapsed and never exceeds the burst."""
        self.assertEqual(refill(0.0, 0, 1000, 2.0, 5), 2.0)
        self.assertEqual(refill(4.0, 0, 10_000, 2.0, 5), 5.0)
        self.assertEqual(refill(1.0, 1000, 500, 2.0, 5), 1.0)  # clock went back: no refill

    def test_take(self) -> None:
        """Taking succeeds with enough tokens and otherwise says how long to wait."""
        self.assertEqual(take(3.0, 1.0, 1), (True, 0, 2.0))
        self.assertEqual(take(0.5, 2.0, 1), (False, 250, 0.5))
        self.assertEqual(take(0.5, 2.0, 0), (False, 250, 0.5))
        self.assertEqual(take(1.0, 2.0, 0), (True, 0, 1.0))


class MemoryRateLimiterTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = MemoryRateLimiter(self.clock)

    def acquire(self, key: str = "k", rate: float = 1.0, burst: int = 3, cost: int = 1):
        return self.successResultOf(self.limiter.acquire(key, rate, burst, cost))

    def test_burst_then_refusal_then_refill(self) -> None:
        """A full bucket allows `burst` requests, then refuses with retry-after until refilled."""
        for _ in range(3):
            self.assertTrue(self.acquire().allowed)
        refused = self.acquire()
        self.assertFalse(refused.allowed)
        self.assertEqual(refused.retry_after_ms, 1000)
        self.clock.advance(0.5)
        self.assertEqual(self.acquire().retry_after_ms, 500)
        self.clock.advance(0.5)
        self.assertTrue(self.acquire().allowed)

    def test_keys_are_independent(self) -> None:
        """Draining one bucket leaves another full."""
        for _ in range(3):
            self.acquire("a")
        self.assertFalse(self.acquire("a").allowed)
        self.assertTrue(self.acquire("b").allowed)

    def test_peek_takes_nothing(self) -> None:
        """cost=0 answers without consuming."""
        for _ in range(5):
            self.assertTrue(self.acquire(cost=0).allowed)
        self.assertEqual(self.acquire(cost=0).remaining, 3.0)

    def test_invalid_bucket(self) -> None:
        """Non-positive rates and bursts are programming errors."""
        self.assertRaises(ValueError, self.limiter.acquire, "k", 0, 3)
        self.assertRaises(ValueError, self.limiter.acquire, "k", 1, 0)

    def test_memory_is_bounded(self) -> None:
        """Past max_buckets, full (idle) buckets are dropped."""
        limiter = MemoryRateLimiter(self.clock, max_buckets=10)
        for i in range(10):
            self.successResultOf(limiter.acquire(f"k{i}", 1.0, 1))
        self.clock.advance(5)
        self.successResultOf(limiter.acquire("new", 1.0, 1))
        self.assertLessEqual(len(limiter._buckets), 2)
