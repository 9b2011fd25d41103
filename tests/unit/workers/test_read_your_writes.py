"""Read your writes across processes: write marks on the bus, and sync waiting for them."""

from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bus.memory import MemoryBroker, MemoryBus
from homeserver.handlers.sync.handler import SyncDeps, SyncHandler, WriteTracker
from workers.rooms import WRITE_MARK_TTL_SECONDS, SharedWriteTracker, mark_writes


def created(sender, shard, position):
    return SimpleNamespace(event=SimpleNamespace(sender=sender), stream_shard=shard, stream_position=position)


class FakeTail:
    """``current`` / ``wait_for`` of a StreamTail, advanced by hand."""

    def __init__(self, clock, shards):
        self.clock = clock
        self.positions = [0] * shards
        self.waiters = []

    def current(self):
        return list(self.positions)

    def wait_for(self, shard, position, timeout):
        d = defer.Deferred()
        self.waiters.append((shard, position, d))
        return d

    def advance(self, shard, position):
        self.positions[shard] = position
        for w in list(self.waiters):
            if w[0] == shard and position >= w[1]:
                self.waiters.remove(w)
                w[2].callback(True)


class ReadYourWritesTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.writer_bus = MemoryBus(self.clock, self.broker)
        self.sync_bus = MemoryBus(self.clock, self.broker)
        self.api = SimpleNamespace(creator=SimpleNamespace(observers=[]))
        mark_writes(self.clock, self.api, self.writer_bus)
        self.tracker = SharedWriteTracker(self.clock, self.sync_bus, WriteTracker())

    def write(self, sender, shard, position):
        for observer in self.api.creator.observers:
            self.successResultOf(defer.ensureDeferred(observer(created(sender, shard, position))))

    def positions(self, user_id):
        return self.successResultOf(defer.ensureDeferred(self.tracker.positions(user_id)))

    def test_marks_written_in_one_process_are_read_in_another(self):
        """A write's position, recorded by the writer, is what another process' tracker reports; marks only rise."""
        self.write("@a:hs", 3, 10)
        self.write("@a:hs", 5, 4)
        self.write("@a:hs", 3, 9)
        self.write("@b:hs", 3, 11)
        self.assertEqual(self.positions("@a:hs"), {3: 10, 5: 4})
        self.tracker.record("@a:hs", 5, 6)
        self.assertEqual(self.positions("@a:hs"), {3: 10, 5: 6})
        self.assertEqual(self.positions("@c:hs"), {})

    def test_marks_expire(self):
        """An idle user's marks vanish after the TTL (by then every tail is far past them)."""
        self.write("@a:hs", 1, 2)
        self.clock.advance(WRITE_MARK_TTL_SECONDS + 1)
        self.assertEqual(self.positions("@a:hs"), {})

    def test_redis_down_degrades_to_local(self):
        """Without Redis a write still succeeds and a sync still answers, from local positions only."""
        self.tracker.record("@a:hs", 2, 7)
        self.broker.up = False
        self.write("@a:hs", 1, 2)
        self.assertEqual(self.positions("@a:hs"), {2: 7})

    def test_sync_waits_for_a_write_made_elsewhere(self):
        """The sync handler holds a request until its tail has seen the user's write on another writer."""
        tail = FakeTail(self.clock, 4)
        deps = SyncDeps(
            events_store=None, receipts_store=None, loader=None, events_tail=tail, receipts_tail=None,
            typing_tail=None, typing_state=None, notifier=None, shard_counts={"events": 4},
            events_shard_of=None, receipts_shard_of=None, typing_shard_of=None, writes=self.tracker,
        )
        handler = SyncHandler(self.clock, deps)
        self.write("@a:hs", 2, 5)
        d = defer.ensureDeferred(handler._await_positions("@a:hs", None, self.clock.seconds() + 30))
        self.assertNoResult(d)
        tail.advance(2, 4)
        self.assertNoResult(d)
        tail.advance(2, 5)
        self.successResultOf(d)
