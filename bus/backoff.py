"""Reconnection backoff as a pure function of the attempt number."""

from __future__ import annotations

import random
from typing import Callable

import attrs


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter and a cap.

    ``delay(attempt)`` is the number of seconds to wait before retry number
    ``attempt`` (0 for the first retry): ``min(maximum, initial * factor **
    attempt)`` scaled by ``jitter()``, a number in [0, 1] — by default drawn
    uniformly from [0.5, 1] so that reconnecting processes spread out but
    never retry in a hot loop. Tests pass ``jitter=lambda: 1.0``.
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 10.0
    jitter: Callable[[], float] = attrs.field(
        default=lambda: random.uniform(0.5, 1.0), eq=False, repr=False
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Cap the exponent so huge attempt counts cannot overflow a float.
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * max(0.0, min(1.0, self.jitter()))
