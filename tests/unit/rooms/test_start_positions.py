"""Where a sync worker's tails start (workers.rooms._start_positions)."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from workers.rooms import _start_positions


class FakeBackend:
    """Newest entry IDs per Redis key."""

    def __init__(self, heads):
        self.heads = heads

    def last_id(self, key):
        """The newest ID of ``key`` or None."""
        return defer.succeed(self.heads.get(key))


class FakeBus:
    """Just enough of a Bus."""

    namespace = "estuary"

    def __init__(self, heads):
        self.backend = FakeBackend(heads)


class StartPositionTests(SynchronousTestCase):
    def test_bus_head_wins_over_postgres_max(self):
        """The bus head is safe (everything below it finished); PostgreSQL's max only when the bus is empty."""
        bus = FakeBus({"estuary:{events:0}": b"7-0"})
        in_pg = lambda shards: defer.succeed({s: 10 for s in shards})  # noqa: E731
        positions = self.successResultOf(defer.ensureDeferred(_start_positions(bus, "events", 2, in_pg)))
        self.assertEqual(positions, {0: 7, 1: 10})
