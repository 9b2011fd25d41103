"""Destination backoff: exponential growth, ceiling, jitter bounds, reset."""

from twisted.trial import unittest

from homeserver.federation.backoff import BackoffPolicy, DestinationRetry

POLICY = BackoffPolicy(min_interval_ms=1000, max_interval_ms=10000, multiplier=2.0, jitter=0.0)


class BackoffTests(unittest.TestCase):
    def test_growth_and_ceiling(self):
        """Intervals double from the minimum and stop at the maximum."""
        state = DestinationRetry("d.test")
        intervals = []
        for i in range(6):
            state = state.after_failure(POLICY, now_ms=1000 * i, jitter_sample=0.5)
            intervals.append(state.retry_interval_ms)
        self.assertEqual(intervals, [1000, 2000, 4000, 8000, 10000, 10000])
        self.assertEqual(state.failure_count, 6)

    def test_can_retry(self):
        """A destination may be retried once its interval has passed; success resets."""
        state = DestinationRetry("d.test").after_failure(POLICY, now_ms=5000, jitter_sample=0.0)
        self.assertFalse(state.can_retry(5999))
        self.assertTrue(state.can_retry(6000))
        self.assertTrue(state.after_success().can_retry(0))
        self.assertEqual(state.after_success().failure_count, 0)

    def test_jitter_bounds(self):
        """Jitter scales within [1-j, 1+j) but never past the ceiling or below the floor."""
        policy = BackoffPolicy(min_interval_ms=1000, max_interval_ms=100000, multiplier=2.0, jitter=0.25)
        self.assertEqual(policy.next_interval(4000, 0.0), 6000)
        self.assertEqual(policy.next_interval(4000, 0.999999), 9999)
        self.assertEqual(policy.next_interval(0, 0.0), 1000)
        self.assertEqual(policy.next_interval(90000, 0.9), 100000)
