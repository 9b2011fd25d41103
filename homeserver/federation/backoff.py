"""Per-destination retry backoff: pure functions over a small state record.

A destination that failed is not contacted again before
``retry_last_ts + retry_interval_ms``; each further failure multiplies the
interval (with jitter) up to a ceiling; a success clears the state.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class BackoffPolicy:
    """How the retry interval grows."""

    min_interval_ms: int = 10 * 60 * 1000
    max_interval_ms: int = 24 * 3600 * 1000
    multiplier: float = 2.0
    #: Each interval is scaled by a factor in [1 - jitter, 1 + jitter).
    jitter: float = 0.2

    def next_interval(self, previous_interval_ms: int, jitter_sample: float) -> int:
        """The interval after one more failure; ``jitter_sample`` is in [0, 1).

        The first failure waits ``min_interval_ms``; then the previous
        interval times ``multiplier``; never more than ``max_interval_ms``
        nor less than ``min_interval_ms``.
        """
        if previous_interval_ms <= 0:
            base = float(self.min_interval_ms)
        else:
            base = previous_interval_ms * self.multiplier
        scaled = base * (1.0 - self.jitter + 2.0 * self.jitter * jitter_sample)
        return int(max(self.min_interval_ms, min(self.max_interval_ms, scaled)))


@attrs.frozen
class DestinationRetry:
    """The persisted backoff state of one destination."""

    destination: str
    failure_count: int = 0
    retry_last_ts: int = 0
    retry_interval_ms: int = 0

    @property
    def retry_at_ms(self) -> int:
        """When the destination may be tried again (0: now)."""
        if self.retry_interval_ms <= 0:
            return 0
        return self.retry_last_ts + self.retry_interval_ms

    def can_retry(self, now_ms: int) -> bool:
        """Whether a request may be sent at ``now_ms``."""
        return now_ms >= self.retry_at_ms

    def after_failure(self, policy: BackoffPolicy, now_ms: int, jitter_sample: float) -> "DestinationRetry":
        """The state after a failed attempt at ``now_ms``."""
        return attrs.evolve(
            self,
            failure_count=self.failure_count + 1,
            retry_last_ts=now_ms,
            retry_interval_ms=policy.next_interval(self.retry_interval_ms, jitter_sample),
        )

    def after_success(self) -> "DestinationRetry":
        """The state after a successful attempt: no backoff."""
        return DestinationRetry(self.destination)
