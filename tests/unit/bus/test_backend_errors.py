"""How redis-py errors map onto the bus' errors (pure, no Redis)."""

import redis.exceptions as rx
from twisted.trial.unittest import SynchronousTestCase

from bus.backend import IdNotIncreasing, NoGroup, _classify
from bus.errors import BusUnavailable


class ClassifyTests(SynchronousTestCase):
    def test_connection_trouble_is_unavailable(self):
        """Connection, timeout, loading and failover errors are retryable."""
        for e in (
            rx.ConnectionError("refused"),
            rx.TimeoutError("slow"),
            rx.BusyLoadingError("LOADING"),
            rx.ReadOnlyError("READONLY"),
            ConnectionResetError(),
            rx.ResponseError("MASTERDOWN Link with MASTER is down"),
            rx.ResponseError("CLUSTERDOWN The cluster is down"),
        ):
            self.assertIsInstance(_classify(e), BusUnavailable, repr(e))

    def test_stream_errors(self):
        """NOGROUP and a refused explicit ID get their own exceptions."""
        self.assertIsInstance(_classify(rx.ResponseError("NOGROUP No such key")), NoGroup)
        self.assertIsInstance(
            _classify(rx.ResponseError("UNBLOCKED the stream key no longer exists")), NoGroup)
        self.assertIsInstance(
            _classify(rx.ResponseError(
                "The ID specified in XADD is equal or smaller than the target stream top item")),
            IdNotIncreasing,
        )

    def test_other_errors_propagate(self):
        """Anything else (a bug, a wrong type) is returned unchanged."""
        e = rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        self.assertIs(_classify(e), e)
        v = ValueError("x")
        self.assertIs(_classify(v), v)
