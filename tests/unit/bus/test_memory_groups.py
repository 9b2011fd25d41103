"""Consumer groups over the in-memory broker, on a fake clock."""

from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred

from bus import GAP_CLAIM_DELETED, GAP_EPOCH, GAP_GROUP_RESET, GAP_MALFORMED, ShardId, stream_key

from .test_memory_bus import BusTestCase

Q0 = ShardId("push", 0)
Q1 = ShardId("push", 1)
KEY = stream_key("push", 0)


class Worker:
    """A handler that records entries and can be told to fail or hang."""

    def __init__(self, fail_on=(), hang_on=()):
        self.handled = []
        self.gaps = []
        self.fail_on = set(fail_on)
        self.hang_on = set(hang_on)
        self.hung = []

    def handler(self, entry):
        if entry.position in self.hang_on:
            d = Deferred()
            self.hung.append(d)
            return d
        if entry.position in self.fail_on:
            self.fail_on.discard(entry.position)
            raise ValueError(f"fail {entry.position}")
        self.handled.append(entry.position)

    def on_gap(self, gap):
        self.gaps.append((gap.after, gap.before, gap.reason))


class GroupTests(BusTestCase):
    def push(self, *positions, shard=0):
        for p in positions:
            self.successResultOf(self.bus.publish("push", shard, p, {"p": p}))

    def consume(self, w, consumer="c1", shards=(Q0,), **kw):
        kw.setdefault("claim_idle", 10.0)
        return self.bus.consume_group(shards, "pushers", consumer, w.handler, w.on_gap, **kw)

    def test_entries_handled_and_acked(self):
        """Entries published before and after joining are handled once and acknowledged."""
        self.push(1, 2)
        w = Worker()
        self.consume(w)
        self.push(3)
        self.assertEqual(w.handled, [1, 2, 3])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})
        self.assertEqual(w.gaps, [])

    def test_two_consumers_share_the_work(self):
        """Two members of one group each get distinct entries."""
        a, b = Worker(), Worker()
        self.consume(a, "a")
        self.consume(b, "b")
        self.push(1, 2, 3, 4)
        self.assertEqual(sorted(a.handled + b.handled), [1, 2, 3, 4])
        self.assertFalse(set(a.handled) & set(b.handled))

    def test_several_shards(self):
        """One worker consumes every shard it was given."""
        w = Worker()
        self.consume(w, shards=[Q0, Q1])
        self.push(1)
        self.push(7, shard=1)
        self.assertEqual(sorted(w.handled), [1, 7])

    def test_failed_handler_leaves_entry_pending_then_retries(self):
        """A failed entry is not acked, and is reclaimed after the idle timeout."""
        failures = REGISTRY.get_sample_value(
            "estuary_bus_group_handler_failures_total", {"stream": "push"}) or 0
        w = Worker(fail_on={2})
        self.consume(w)
        self.push(1, 2, 3)
        self.assertEqual(w.handled, [1, 3])
        self.assertEqual(list(self.broker.pending(KEY, "pushers")), [b"2-0"])
        self.clock.advance(9)
        self.assertEqual(w.handled, [1, 3])
        self.clock.advance(6)  # idle >= 10s at the reclaim round after t=10
        self.assertEqual(w.handled, [1, 3, 2])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})
        self.assertEqual(REGISTRY.get_sample_value(
            "estuary_bus_group_handler_failures_total", {"stream": "push"}) - failures, 1)
        self.flushLoggedErrors(ValueError)

    def test_dead_consumer_entry_redelivered_to_another(self):
        """An entry taken by a consumer that dies before acking goes to another one."""
        dead = Worker(hang_on={1})
        self.consume(dead, "dead")
        self.push(1)
        self.assertEqual(len(dead.hung), 1)
        alive = Worker()
        self.consume(alive, "alive")
        self.push(2)
        self.assertEqual(alive.handled, [2])
        self.clock.advance(5)
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertEqual(alive.handled, [2, 1])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})
        dead.hung[0].callback(None)  # the late handler acks nothing still pending
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})

    def test_restart_reads_own_pending_first(self):
        """A consumer restarted under the same name first handles its own pending entries."""
        first = Worker(hang_on={1, 2})
        worker = self.consume(first, claim_idle=1000)
        self.push(1)
        # Simulate a crash: the handler never finishes, the loop is abandoned.
        self.assertEqual(list(self.broker.pending(KEY, "pushers")), [b"1-0"])
        self.push(2)
        second = Worker()
        self.consume(second, claim_idle=1000)
        self.assertEqual(second.handled, [1, 2])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})
        first.hung[0].callback(None)  # the abandoned handler finishing acks nothing new
        self.assertTrue(worker.running)

    def test_flush_recreates_group_and_reports_once(self):
        """After a flush the group is recreated and a single epoch gap is reported."""
        w = Worker()
        self.consume(w)
        self.push(1)
        self.broker.flushall()
        self.clock.advance(0)
        self.push(2)
        self.assertEqual(w.gaps, [(None, None, GAP_EPOCH)])
        self.assertEqual(w.handled, [1, 2])
        self.flushLoggedErrors()

    def test_group_deleted_without_flush(self):
        """A group that vanished while the epoch survived is reported as a reset."""
        w = Worker()
        self.consume(w)
        self.push(1)
        self.broker.delete(KEY)
        self.push(2)
        self.clock.advance(2)
        self.assertEqual(w.gaps, [(None, None, GAP_GROUP_RESET)])
        self.assertEqual(w.handled, [1, 2])

    def test_trimmed_pending_entry(self):
        """A pending entry trimmed away before its ack is reported as a gap and dropped."""
        w = Worker(fail_on={1})
        self.consume(w)
        self.push(1, 2)
        self.broker.trim(KEY, 1)
        self.clock.advance(10)
        self.clock.advance(5)
        self.assertEqual(w.gaps, [(0, 2, GAP_CLAIM_DELETED)])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})
        self.flushLoggedErrors(ValueError)

    def test_malformed_entry_acked_and_reported(self):
        """A malformed entry is acknowledged (no endless redelivery) and reported."""
        w = Worker()
        self.consume(w)
        self.broker.xadd(KEY, "3-0", {b"v": b"1", b"data": b"[]"}, None)
        self.assertEqual(w.gaps, [(2, 4, GAP_MALFORMED)])
        self.assertEqual(self.broker.pending(KEY, "pushers"), {})

    def test_outage_and_recovery(self):
        """A worker survives Redis going away and coming back with its data."""
        w = Worker()
        self.consume(w)
        self.broker.stop()
        self.clock.advance(1)
        self.broker.start()
        self.push(1)
        self.clock.advance(2)
        self.assertEqual(w.handled, [1])
        self.assertEqual(w.gaps, [])

    def test_stop(self):
        """stop() ends every shard loop; later entries are not handled."""
        w = Worker()
        worker = self.consume(w, shards=[Q0, Q1])
        self.successResultOf(worker.stop())
        self.assertFalse(worker.running)
        self.push(1)
        self.assertEqual(w.handled, [])

    def test_bad_arguments(self):
        """Invalid names, empty shard lists and non-positive timeouts are refused."""
        w = Worker()
        self.assertRaises(ValueError, self.bus.consume_group, [Q0], "bad name", "c", w.handler)
        self.assertRaises(ValueError, self.bus.consume_group, [], "g", "c", w.handler)
        self.assertRaises(ValueError, self.bus.consume_group, [Q0], "g", "c", w.handler, claim_idle=0)
