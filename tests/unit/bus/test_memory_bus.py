"""The Bus logic over the in-memory broker, on a fake clock.

These tests pin the gap semantics shared by ``MemoryBus`` and the Redis bus
(the logic is the same code; only the backend differs).
"""

import gc
import weakref

from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bus import (
    GAP_EPOCH,
    GAP_MALFORMED,
    GAP_MISSED,
    GAP_UNKNOWN_PREV,
    Backoff,
    BusClosed,
    BusUnavailable,
    MemoryBroker,
    MemoryBus,
    PositionNotIncreasing,
    PublishDropped,
    ShardId,
    epoch_key,
    stream_key,
)
from bus.backend import NoGroup

EV0 = ShardId("events", 0)
EV1 = ShardId("events", 1)
KEY0 = stream_key("events", 0)


class Recorder:
    """Collects what a subscription delivers, as (kind, value) pairs."""

    def __init__(self, caught_up=None):
        self.seen = []
        self.caught_up = caught_up or {}

    def on_entry(self, entry):
        self.seen.append(("entry", entry.position, entry.prev, dict(entry.payload)))

    def on_gap(self, gap):
        self.seen.append(("gap", gap.after, gap.before, gap.reason))
        return self.caught_up.get((gap.after, gap.before))

    def positions(self):
        return [s[1] for s in self.seen if s[0] == "entry"]

    def gaps(self):
        return [s[1:] for s in self.seen if s[0] == "gap"]


class BusTestCase(SynchronousTestCase):
    def setUp(self):
        self.addCleanup(self._collect_garbage)
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.bus = self.make_bus()

    def _collect_garbage(self):
        """Drop this test's buses and collect them, so that whatever they leaked is reported here.

        Runs last: every bus is closed by then, so no loop should be left
        suspended; one that was abandoned must run no code when collected
        (an unhandled failing Deferred logged now fails this test).
        """
        del self.bus, self.broker, self.clock
        gc.collect()

    def make_bus(self, **kwargs):
        kwargs.setdefault("backoff", Backoff(initial=1.0, factor=2.0, maximum=8.0, jitter=lambda: 1.0))
        kwargs.setdefault("epoch_check_interval", 5.0)
        kwargs.setdefault("block_seconds", 2.0)
        bus = MemoryBus(self.clock, self.broker, **kwargs)
        # A test that leaves a handler hanging must release it before the end.
        self.addCleanup(lambda: self.successResultOf(bus.close()))
        return bus

    def publish(self, *positions, shard=0, bus=None):
        for p in positions:
            self.successResultOf((bus or self.bus).publish("events", shard, p, {"p": p}))

    def subscribe(self, positions, rec=None, bus=None):
        rec = rec or Recorder()
        sub = (bus or self.bus).subscribe(positions, rec.on_entry, rec.on_gap)
        return sub, rec


class TailTests(BusTestCase):
    def test_entries_in_order_with_prev_chain(self):
        """A consumer from 0 gets every entry in order, each naming its predecessor."""
        self.publish(1, 2, 5)
        sub, rec = self.subscribe({EV0: 0})
        self.assertEqual(
            rec.seen,
            [("entry", 1, None, {"p": 1}), ("entry", 2, 1, {"p": 2}), ("entry", 5, 2, {"p": 5})],
        )
        self.assertEqual(sub.positions, {EV0: 5})

    def test_holes_are_not_gaps(self):
        """Position holes (rolled-back transactions) produce no gap."""
        self.publish(3, 10, 11)
        sub, rec = self.subscribe({EV0: 3})
        self.assertEqual(rec.positions(), [10, 11])
        self.assertEqual(rec.gaps(), [])

    def test_live_delivery_while_blocked(self):
        """Entries published while the consumer waits are delivered at once."""
        sub, rec = self.subscribe({EV0: 0, EV1: 0})
        self.publish(1)
        self.publish(4, shard=1)
        self.publish(2)
        self.assertEqual(rec.positions(), [1, 4, 2])
        self.assertEqual(sub.positions, {EV0: 2, EV1: 4})

    def test_only_entries_after_the_position(self):
        """Tailing from P never delivers P or anything before it."""
        self.publish(1, 2, 3, 4)
        sub, rec = self.subscribe({EV0: 2})
        self.assertEqual(rec.positions(), [3, 4])

    def test_trimmed_entries_are_a_gap(self):
        """A consumer behind the oldest kept entry is told which positions it missed."""
        bus = self.make_bus(stream_maxlen={"events": 3})
        self.publish(*range(1, 11), bus=bus)
        self.assertEqual(len(self.broker.entry_ids(KEY0)), 3)
        sub, rec = self.subscribe({EV0: 2}, bus=bus)
        self.assertEqual(rec.seen[0], ("gap", 2, 8, GAP_MISSED))
        self.assertEqual(rec.positions(), [8, 9, 10])

    def test_gap_handler_can_report_catch_up(self):
        """Returning a position from on_gap skips entries the caller already read."""
        bus = self.make_bus(stream_maxlen={"events": 3})
        self.publish(*range(1, 11), bus=bus)
        sub, rec = self.subscribe({EV0: 2}, Recorder(caught_up={(2, 8): 9}), bus=bus)
        self.assertEqual(rec.gaps(), [(2, 8, GAP_MISSED)])
        self.assertEqual(rec.positions(), [10])

    def test_restarted_writer_causes_a_gap(self):
        """The first entry of a new writer has no prev: consumers report a gap."""
        self.publish(1, 2)
        sub, rec = self.subscribe({EV0: 2})
        self.publish(4, bus=self.make_bus())
        self.assertEqual(rec.seen, [("gap", 2, 4, GAP_UNKNOWN_PREV), ("entry", 4, None, {"p": 4})])

    def test_resumed_writer_vouches_for_committed_positions(self):
        """A writer resumed at its last committed position spares up-to-date consumers a gap."""
        self.publish(1, 2)
        sub, rec = self.subscribe({EV0: 2})
        late, late_rec = self.subscribe({EV0: 1})
        self.successResultOf(late.stop())
        writer = self.make_bus()
        writer.resume_writer("events", 0, 3)  # 3 was committed, never published
        self.publish(5, bus=writer)
        self.assertEqual(rec.seen[-2:], [("gap", 2, 5, GAP_MISSED), ("entry", 5, 3, {"p": 5})])
        other = self.make_bus()
        other.resume_writer("events", 0, 5)
        self.publish(7, bus=other)
        self.assertEqual(rec.seen[-1], ("entry", 7, 5, {"p": 7}))
        self.assertEqual(len(rec.gaps()), 1)
        self.assertRaises(ValueError, other.resume_writer, "events", 0, 9)
        self.assertRaises(ValueError, other.resume_writer, "events", 1, -1)

    def test_flush_on_quiet_shard_reported_by_epoch(self):
        """FLUSHALL with nothing published afterwards is noticed via the epoch key."""
        self.publish(1, 2)
        sub, rec = self.subscribe({EV0: 2, EV1: 0})
        self.broker.flushall()
        self.clock.advance(4.9)
        self.assertEqual(rec.gaps(), [])
        self.clock.advance(0.2)
        self.assertEqual(sorted(rec.gaps()), [(0, None, GAP_EPOCH), (2, None, GAP_EPOCH)])
        # The epoch is re-established: nothing more is reported later.
        self.clock.advance(20)
        self.assertEqual(len(rec.gaps()), 2)
        # The writer carries on; its chain continues, so no further gap.
        self.publish(3)
        self.assertEqual(rec.positions(), [3])
        self.assertEqual(len(rec.gaps()), 2)

    def test_epoch_changed_by_someone_else(self):
        """A different epoch token (Redis replaced by another instance) is a gap too."""
        sub, rec = self.subscribe({EV0: 0})
        self.broker.set(epoch_key("events", 0), b"other")
        self.clock.advance(5)
        self.assertEqual(rec.gaps(), [(0, None, GAP_EPOCH)])

    def test_missed_entries_after_flush_are_a_gap(self):
        """Entries lost in a flush are detected by the next entry's prev."""
        self.publish(1)
        sub, rec = self.subscribe({EV0: 1})
        sub2, rec2 = self.subscribe({EV0: 0})
        self.successResultOf(sub.stop())
        self.publish(2, 3)
        self.broker.flushall()
        self.publish(4)
        sub3, rec3 = self.subscribe({EV0: 1})
        self.assertEqual(rec3.seen, [("gap", 1, 4, GAP_MISSED), ("entry", 4, 3, {"p": 4})])
        # The live consumer saw 2 and 3 before the flush: no gap from the chain.
        self.assertEqual(rec2.positions(), [1, 2, 3, 4])

    def test_malformed_entry_is_a_gap(self):
        """An undecodable entry is reported as a gap covering its position."""
        self.publish(1)
        self.broker.xadd(KEY0, "2-0", {b"v": b"9"}, None)
        self.publish(3)
        sub, rec = self.subscribe({EV0: 0})
        self.assertEqual(rec.positions(), [1, 3])
        self.assertEqual(rec.gaps(), [(1, 3, GAP_MALFORMED)])

    def test_malformed_foreign_id_does_not_loop(self):
        """An entry with a foreign ID (ms-seq) is skipped once, not re-read forever."""
        self.broker.xadd(KEY0, "5-1", {b"x": b"y"}, None)
        sub, rec = self.subscribe({EV0: 0})
        self.clock.advance(10)
        self.assertEqual(rec.gaps(), [(0, 6, GAP_MALFORMED)])
        self.publish(6)
        self.assertEqual(rec.positions(), [6])

    def test_handler_backpressure(self):
        """The next entry waits until the handler's Deferred fires."""
        pending = []

        def on_entry(entry):
            d = Deferred()
            pending.append((entry.position, d))
            return d

        self.publish(1, 2)
        self.bus.subscribe({EV0: 0}, on_entry, lambda g: None)
        self.assertEqual([p for p, _ in pending], [1])
        pending[0][1].callback(None)
        self.assertEqual([p for p, _ in pending], [1, 2])
        pending[1][1].callback(None)

    def test_coroutine_handlers(self):
        """Handlers may be coroutines (async def)."""
        got = []

        async def on_entry(entry):
            got.append(entry.position)

        async def on_gap(gap):
            return None

        self.publish(1)
        self.bus.subscribe({EV0: 0}, on_entry, on_gap)
        self.assertEqual(got, [1])

    def test_handler_error_ends_subscription(self):
        """A failing handler stops the subscription and surfaces the error."""

        def on_entry(entry):
            raise RuntimeError("boom")

        self.publish(1, 2)
        sub = self.bus.subscribe({EV0: 0}, on_entry, lambda g: None)
        self.assertFalse(sub.running)
        self.failureResultOf(sub.when_done(), RuntimeError)
        self.assertEqual(sub.positions, {EV0: 0})
        self.flushLoggedErrors(RuntimeError)

    def test_stop_while_blocked(self):
        """stop() interrupts a blocked read and fires."""
        sub, rec = self.subscribe({EV0: 0})
        self.assertIsNone(self.successResultOf(sub.stop()))
        self.assertFalse(sub.running)
        self.publish(1)
        self.assertEqual(rec.seen, [])

    def test_bad_arguments(self):
        """Subscribing to nothing, or with something other than ShardId, is refused."""
        self.assertRaises(ValueError, self.bus.subscribe, {}, print, print)
        self.assertRaises(TypeError, self.bus.subscribe, {("events", 0): 0}, print, print)

    def test_unblocked_read_is_retried(self):
        """A read woken by its key's deletion (UNBLOCKED) is retried, not fatal."""
        backend = self.bus.backend
        original = backend.xread
        calls = []

        def xread(*args):
            calls.append(args)
            if len(calls) == 1:
                return fail(NoGroup("UNBLOCKED the stream key no longer exists"))
            return original(*args)

        backend.xread = xread
        self.publish(1)
        sub, rec = self.subscribe({EV0: 0})
        self.assertEqual(rec.positions(), [1])
        self.assertEqual(len(calls), 3)  # failed, delivered 1, now blocked
        self.assertTrue(sub.running)

    def test_lag_metric(self):
        """The consumer lag gauge counts positions between consumer and shard top."""
        bus = self.make_bus(read_count=2)
        self.publish(1, 2, 3, 4, 5, bus=bus)
        seen = []
        lags = []

        def on_entry(entry):
            seen.append(entry.position)
            lags.append(REGISTRY.get_sample_value(
                "estuary_bus_consumer_lag", {"stream": "events", "shard": "0", "consumer": "lagtest"}))

        bus.subscribe({EV0: 0}, on_entry, lambda g: None, name="lagtest")
        self.assertEqual(seen, [1, 2, 3, 4, 5])
        # After the first full batch (1, 2) the gauge said 3 behind.
        self.assertEqual(lags[2], 3.0)
        self.clock.advance(3)
        self.assertEqual(REGISTRY.get_sample_value(
            "estuary_bus_consumer_lag", {"stream": "events", "shard": "0", "consumer": "lagtest"}), 0.0)


class ReconnectTests(BusTestCase):
    def test_consumer_survives_outage_without_loss(self):
        """Redis away then back with its data: the consumer resumes, no gap."""
        reconnects = REGISTRY.get_sample_value("estuary_bus_reconnects_total", {"role": "tail"}) or 0
        self.publish(1)
        sub, rec = self.subscribe({EV0: 0})
        self.broker.stop()
        self.clock.advance(1)  # retry 1 fails
        self.clock.advance(2)  # retry 2 fails
        self.broker.start()
        self.publish(2)
        self.assertEqual(rec.positions(), [1])
        self.clock.advance(4)
        self.assertEqual(rec.positions(), [1, 2])
        self.assertEqual(rec.gaps(), [])
        self.assertEqual(
            REGISTRY.get_sample_value("estuary_bus_reconnects_total", {"role": "tail"}) - reconnects, 3
        )

    def test_restart_without_persistence(self):
        """Redis restarted empty: consumers report an epoch gap right after reconnecting."""
        self.publish(1)
        sub, rec = self.subscribe({EV0: 1})
        self.broker.stop()
        self.broker.start(flush=True)
        self.clock.advance(1)
        self.assertEqual(rec.gaps(), [(1, None, GAP_EPOCH)])

    def test_publish_waits_for_redis_and_keeps_order(self):
        """Publishes made while Redis is away are queued and land in order."""
        sub, rec = self.subscribe({EV0: 0})
        self.broker.stop()
        d1 = self.bus.publish("events", 0, 1, {})
        d2 = self.bus.publish("events", 0, 2, {})
        self.assertNoResult(d1)
        self.clock.advance(1)
        self.broker.start()
        self.clock.advance(2)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.clock.advance(10)
        self.assertEqual(rec.positions(), [1, 2])

    def test_publish_after_wipe_reveals_gap(self):
        """A publisher that outlived a wipe chains from its last position; consumers see the gap."""
        self.publish(1, 2)
        self.broker.stop()
        self.broker.start(flush=True)
        self.publish(3)
        sub, rec = self.subscribe({EV0: 1})
        self.assertEqual(rec.seen, [("gap", 1, 3, GAP_MISSED), ("entry", 3, 2, {"p": 3})])

    def test_queue_overflow_drops_oldest(self):
        """A full publish queue drops its oldest entry; the chain still reveals it."""
        bus = self.make_bus(publish_queue_limit=2)
        self.broker.stop()
        ds = [bus.publish("events", 0, p, {}) for p in (1, 2, 3, 4)]
        # 1 is in flight, 2 was dropped when 4 arrived.
        self.failureResultOf(ds[1], PublishDropped)
        self.broker.start()
        self.clock.advance(1)
        for d in (ds[0], ds[2], ds[3]):
            self.successResultOf(d)
        sub, rec = self.subscribe({EV0: 1})
        self.assertEqual(rec.seen[:2], [("gap", 1, 3, GAP_MISSED), ("entry", 3, 2, {})])

    def test_connect_retries_until_timeout(self):
        """connect() retries with backoff and gives up after its timeout."""
        self.broker.stop()
        d = self.bus.connect(timeout=5)
        self.clock.advance(1)
        self.clock.advance(2)
        self.failureResultOf(d, BusUnavailable)
        d = self.bus.connect(timeout=5)
        self.broker.start()
        self.clock.advance(1)
        self.successResultOf(d)

    def test_ping(self):
        """ping() succeeds when Redis answers and fails with BusUnavailable otherwise."""
        self.successResultOf(self.bus.ping())
        self.broker.stop()
        self.failureResultOf(self.bus.ping(), BusUnavailable)


class PublishTests(BusTestCase):
    def test_positions_must_increase(self):
        """A position not above the last one published on the shard is refused."""
        self.publish(5)
        self.failureResultOf(self.bus.publish("events", 0, 5, {}), PositionNotIncreasing)
        self.failureResultOf(self.bus.publish("events", 0, 4, {}), PositionNotIncreasing)
        self.publish(5, shard=1)  # other shards are independent

    def test_republish_of_landed_entry_is_success(self):
        """Re-sending the stream's top entry (a retried XADD) counts as done."""
        self.publish(1, 2)
        other = self.make_bus()
        self.successResultOf(other.publish("events", 0, 2, {"p": 2}))
        self.failureResultOf(other.publish("events", 0, 2, {}), PositionNotIncreasing)
        third = self.make_bus()
        f = self.failureResultOf(third.publish("events", 0, 1, {}), PositionNotIncreasing)
        self.assertEqual(f.value.top, 2)

    def test_bad_payload_still_advances_chain(self):
        """A payload that cannot be encoded fails, yet the next entry names its position."""
        self.publish(1)
        self.failureResultOf(self.bus.publish("events", 0, 2, {"x": object()}), TypeError)
        self.publish(3)
        self.assertEqual(self.bus.last_published("events", 0), 3)
        sub, rec = self.subscribe({EV0: 1})
        self.assertEqual(rec.seen, [("gap", 1, 3, GAP_MISSED), ("entry", 3, 2, {"p": 3})])

    def test_maxlen_per_stream(self):
        """MAXLEN is configured per stream, with a default."""
        bus = self.make_bus(maxlen=4, stream_maxlen={"typing": None})
        self.assertEqual(bus.maxlen_for("events"), 4)
        self.assertIsNone(bus.maxlen_for("typing"))
        for p in range(1, 8):
            self.successResultOf(bus.publish("typing", 0, p, {}))
        self.assertEqual(len(self.broker.entry_ids(stream_key("typing", 0))), 7)

    def test_close(self):
        """close() stops subscriptions, fails queued publishes and refuses new work."""
        sub, rec = self.subscribe({EV0: 0})
        self.broker.stop()
        d1 = self.bus.publish("events", 0, 1, {})
        d2 = self.bus.publish("events", 0, 2, {})
        self.successResultOf(self.bus.close())
        self.failureResultOf(d1, BusClosed)
        self.failureResultOf(d2, BusClosed)
        self.assertFalse(sub.running)
        self.failureResultOf(self.bus.publish("events", 0, 3, {}), BusClosed)
        self.assertRaises(BusClosed, self.bus.subscribe, {EV0: 0}, print, print)


class AbandonedTests(BusTestCase):
    """Work abandoned for good (a handler or a write that never finishes) is left alone.

    Nothing can fire such a Deferred any more, so the coroutine waiting on
    it becomes garbage. Closing it must run none of the bus's code: the
    loop has not ended, and resuming its observers from inside the garbage
    collector used to run ``Bus.close`` in coroutines the collector had
    already closed, logging "cannot reuse already awaited coroutine".
    """

    def abandon(self, hung):
        """Drop the only reference to a never-fired Deferred and collect it."""
        ref = weakref.ref(hung.pop())
        gc.collect()
        self.assertIsNone(ref(), "the abandoned Deferred was not collected")

    def test_abandoned_subscription(self):
        """A subscription stuck in a handler is not reported as ended when collected."""
        hung = [Deferred()]
        self.publish(1)
        sub = self.bus.subscribe({EV0: 0}, lambda entry: hung[0], lambda gap: None)
        done = sub.when_done()
        closing = self.bus.close()
        self.abandon(hung)
        self.assertNoResult(done)
        self.assertNoResult(closing)
        self.assertTrue(sub.running)

    def test_abandoned_group_worker(self):
        """A group worker stuck in a handler is not reported as ended when collected."""
        hung = [Deferred()]
        self.publish(1)
        worker = self.bus.consume_group([EV0], "g", "c", lambda entry: hung[0])
        done = worker.when_done()
        closing = self.bus.close()
        self.abandon(hung)
        self.assertNoResult(done)
        self.assertNoResult(closing)
        self.assertTrue(worker.running)

    def test_abandoned_publish(self):
        """A publisher stuck in a write does not resume close() when collected."""
        hung = [Deferred()]
        self.bus.backend.xadd = lambda *args: hung[0]
        published = self.bus.publish("events", 0, 1, {})
        closing = self.bus.close()
        self.abandon(hung)
        self.assertNoResult(published)
        self.assertNoResult(closing)
