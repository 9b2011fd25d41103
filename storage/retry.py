"""Which database failures are worth retrying, and how long to wait between tries.

Pure logic: no reactor, no connection. :class:`storage.database.Database` asks
:func:`classify_failure` what went wrong with an attempt and
:class:`RetryPolicy` whether (and after how long) to try again.
"""

from __future__ import annotations

import enum

import attrs
import psycopg2
import psycopg2.errors

# SQLSTATE codes (PostgreSQL appendix A) of the transient conflicts that a
# fresh attempt of the same transaction is expected to get past.
SQLSTATE_SERIALIZATION_FAILURE = "40001"
SQLSTATE_DEADLOCK_DETECTED = "40P01"


class FailureKind(enum.Enum):
    """Why an attempt at a transaction failed, as far as retrying is concerned."""

    #: The transaction lost a race under REPEATABLE READ / SERIALIZABLE.
    SERIALIZATION = "serialization"
    #: PostgreSQL broke a lock cycle by aborting this transaction.
    DEADLOCK = "deadlock"
    #: The connection to the server was lost (or could not be made).
    CONNECTION = "connection"
    #: Anything else: a bug, a constraint violation, bad input. Not retried.
    FATAL = "fatal"


def classify_failure(error: BaseException, connection_broken: bool) -> FailureKind:
    """Classify the exception that ended one attempt at a transaction.

    ``connection_broken`` says whether the connection the attempt ran on is
    now unusable (psycopg2's ``connection.closed`` is non-zero, or connecting
    failed). A broken connection wins over anything else the error says,
    because the only way forward is a new connection.
    """
    if connection_broken:
        return FailureKind.CONNECTION
    if isinstance(error, psycopg2.errors.SerializationFailure):
        return FailureKind.SERIALIZATION
    if isinstance(error, psycopg2.errors.DeadlockDetected):
        return FailureKind.DEADLOCK
    # Errors built by hand (tests, wrappers) may carry only the SQLSTATE.
    code = getattr(error, "pgcode", None)
    if code == SQLSTATE_SERIALIZATION_FAILURE:
        return FailureKind.SERIALIZATION
    if code == SQLSTATE_DEADLOCK_DETECTED:
        return FailureKind.DEADLOCK
    return FailureKind.FATAL


def _positive(instance, attribute, value) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How many times a transaction is attempted and the backoff between attempts.

    The delay before attempt ``n + 1`` (after ``n`` failures) is drawn from
    ``[d / 2, d)`` where ``d = min(max_delay, base_delay * 2 ** (n - 1))``:
    exponential growth so a hot row is not hammered, jitter so contending
    transactions do not retry in lock-step, and a floor of half the step so
    a retry never fires immediately.
    """

    max_attempts: int = attrs.field(default=5, validator=_positive)
    base_delay: float = attrs.field(default=0.02, validator=_positive)
    max_delay: float = attrs.field(default=1.0, validator=_positive)

    def delay(self, failures: int, jitter: float) -> float:
        """Seconds to wait after the ``failures``-th failed attempt.

        ``jitter`` is a number in ``[0, 1)`` (``random.random()`` in
        production, a constant in tests).
        """
        if failures < 1:
            raise ValueError("delay() is only defined after at least one failure")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        step = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return step / 2 + step / 2 * jitter

    def should_retry(self, kind: FailureKind, failures: int) -> bool:
        """Whether to try again after ``failures`` failed attempts, the last of ``kind``."""
        return kind is not FailureKind.FATAL and failures < self.max_attempts
