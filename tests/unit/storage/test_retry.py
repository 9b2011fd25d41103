"""Retry classification and backoff of database transactions."""

import psycopg2
import psycopg2.errors
from twisted.trial import unittest

from storage.retry import FailureKind, RetryPolicy, classify_failure


class _CodedError(psycopg2.DatabaseError):
    """A driver error carrying only an SQLSTATE, as a wrapper might produce."""

    def __init__(self, code):
        super().__init__("coded")
        self.code = code

    @property
    def pgcode(self):
        return self.code


class ClassifyFailureTests(unittest.TestCase):
    def test_serialization_failure(self):
        """A serialization failure is a retryable conflict."""
        self.assertIs(
            classify_failure(psycopg2.errors.SerializationFailure(), False), FailureKind.SERIALIZATION
        )

    def test_deadlock(self):
        """A detected deadlock is a retryable conflict of its own kind."""
        self.assertIs(classify_failure(psycopg2.errors.DeadlockDetected(), False), FailureKind.DEADLOCK)

    def test_sqlstate_only(self):
        """Errors are also recognised by SQLSTATE alone."""
        self.assertIs(classify_failure(_CodedError("40001"), False), FailureKind.SERIALIZATION)
        self.assertIs(classify_failure(_CodedError("40P01"), False), FailureKind.DEADLOCK)
        self.assertIs(classify_failure(_CodedError("23505"), False), FailureKind.FATAL)

    def test_broken_connection_wins(self):
        """Whatever the error, a broken connection means reconnect and retry."""
        self.assertIs(classify_failure(psycopg2.OperationalError("gone"), True), FailureKind.CONNECTION)
        self.assertIs(classify_failure(ValueError("x"), True), FailureKind.CONNECTION)

    def test_other_errors_are_fatal(self):
        """Application errors, constraint violations and driver errors on a live connection are not retried."""
        self.assertIs(classify_failure(ValueError("bad input"), False), FailureKind.FATAL)
        self.assertIs(classify_failure(psycopg2.errors.UniqueViolation(), False), FailureKind.FATAL)
        self.assertIs(classify_failure(psycopg2.OperationalError("other"), False), FailureKind.FATAL)


class RetryPolicyTests(unittest.TestCase):
    def test_exponential_with_cap(self):
        """The backoff step doubles per failure up to the cap; jitter spans its upper half."""
        policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.5)
        self.assertAlmostEqual(policy.delay(1, 0.0), 0.05)
        self.assertAlmostEqual(policy.delay(2, 0.0), 0.1)
        self.assertAlmostEqual(policy.delay(3, 0.0), 0.2)
        self.assertAlmostEqual(policy.delay(3, 0.5), 0.3)
        self.assertAlmostEqual(policy.delay(4, 0.0), 0.25)
        self.assertAlmostEqual(policy.delay(9, 0.999), 0.49975)

    def test_delay_arguments_checked(self):
        """Asking for a delay before any failure, or with jitter outside [0, 1), is a bug."""
        policy = RetryPolicy()
        self.assertRaises(ValueError, policy.delay, 0, 0.5)
        self.assertRaises(ValueError, policy.delay, 1, 1.0)
        self.assertRaises(ValueError, policy.delay, 1, -0.1)

    def test_should_retry(self):
        """Transient failures are retried until max_attempts attempts have failed; fatal ones never."""
        policy = RetryPolicy(max_attempts=3)
        for kind in (FailureKind.SERIALIZATION, FailureKind.DEADLOCK, FailureKind.CONNECTION):
            self.assertTrue(policy.should_retry(kind, 1))
            self.assertTrue(policy.should_retry(kind, 2))
            self.assertFalse(policy.should_retry(kind, 3))
        self.assertFalse(policy.should_retry(FailureKind.FATAL, 1))

    def test_policy_validated(self):
        """A policy with non-positive numbers is refused at construction."""
        self.assertRaises(ValueError, RetryPolicy, max_attempts=0)
        self.assertRaises(ValueError, RetryPolicy, base_delay=0)
