"""The stream tail on a MemoryBus with fake time, and the long-poll notifier."""

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bus import Backoff, MemoryBroker, MemoryBus, ShardId
from homeserver.handlers.sync.notifier import Notifier
from homeserver.handlers.sync.tail import StreamTail


@attrs.frozen
class Row:
    """A stream row as the store returns it."""
    stream_position: int
    room_id: str


def decode(shard, position, payload):
    """Decode a test payload."""
    if "room_id" not in payload:
        raise ValueError("no room")
    return Row(position, payload["room_id"])


class FakeDb:
    """Rows 'committed in PostgreSQL' per shard, served to the tail's catch-up."""

    def __init__(self):
        self.rows = {0: [], 1: []}
        self.calls = []

    def add(self, shard, position, room):
        """Commit a row."""
        self.rows[shard].append(Row(position, room))

    def fetch(self, shard, after, upto, limit):
        """Serve the tail's catch-up reads."""
        self.calls.append((shard, after, upto))
        found = [r for r in self.rows[shard] if after < r.stream_position <= upto][:limit]
        return defer.succeed(found)


class TailTests(SynchronousTestCase):
    """StreamTail fed by a MemoryBus on fake time."""
    def setUp(self):
        """Build the fixtures."""
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.db = FakeDb()
        self.tail = StreamTail(self.clock, "events", 2, self.db.fetch, decode, capacity=4)
        self.tail.start([0, 0])
        self.seen = []
        self.tail.add_listener(lambda shard, row: self.seen.append((shard, row.stream_position)))

    def bus(self, **kw):
        """A MemoryBus on the shared broker."""
        bus = MemoryBus(self.clock, self.broker, backoff=Backoff(initial=1.0, jitter=lambda: 1.0),
                        block_seconds=1.0, epoch_check_interval=5.0, **kw)
        self.addCleanup(bus.close)
        return bus

    def subscribe(self, bus, positions=(0, 0)):
        """Subscribe the tail."""
        return bus.subscribe({ShardId("events", s): p for s, p in enumerate(positions)},
                             self.tail.on_entry, self.tail.on_gap)

    def publish(self, bus, shard, position, room="!r:x"):
        """Commit and publish one row."""
        self.db.add(shard, position, room)
        self.successResultOf(bus.publish("events", shard, position, {"room_id": room}))

    def test_rows_in_order_and_window(self):
        """Entries become rows per shard; ranges older than the window are None (read PostgreSQL)."""
        bus = self.bus()
        self.subscribe(bus)
        for p in (1, 2, 4, 7, 9):
            self.publish(bus, 0, p)
        self.publish(bus, 1, 3, "!other:x")
        self.assertEqual(self.tail.current(), (9, 3))
        self.assertEqual([r.stream_position for r in self.tail.rows(0, 2, 9)], [4, 7, 9])
        self.assertIsNone(self.tail.rows(0, 0, 9))  # position 1 was pushed out (capacity 4)
        self.assertIsNone(self.tail.rows(0, 4, 10))  # beyond what is known
        self.assertEqual(self.tail.rows(1, 0, 3), [Row(3, "!other:x")])
        # Shard 1's first entry came from a writer that could not name its
        # predecessor: everything before it was read from PostgreSQL once.
        self.assertEqual(self.db.calls, [(1, 0, 2)])

    def test_trimmed_entries_are_caught_up_from_postgres(self):
        """A gap with a known upper bound is filled from PostgreSQL, in order, without duplicates."""
        writer = self.bus(stream_maxlen={"events": 2})
        for p in range(1, 7):
            self.publish(writer, 0, p)
        self.subscribe(self.bus())
        self.assertEqual(self.db.calls, [(0, 0, 4)])
        self.assertEqual(self.seen, [(0, p) for p in range(1, 7)])
        self.assertEqual(self.tail.current(), (6, 0))

    def test_writer_restart_is_caught_up(self):
        """Entries of a restarted writer (no prev) are preceded by a PostgreSQL catch-up."""
        self.subscribe(self.bus())
        first = self.bus()
        self.publish(first, 0, 1)
        self.db.add(0, 2, "!r:x")  # committed, but the writer died before publishing it
        second = self.bus()  # a new writer process: it does not know what came before
        self.publish(second, 0, 3)
        self.assertEqual(self.seen, [(0, 1), (0, 2), (0, 3)])

    def test_unbounded_gap_waits_for_next_entry(self):
        """When Redis loses everything, the tail does not guess from PostgreSQL; later entries still flow."""
        writer = self.bus()
        self.subscribe(self.bus())
        self.publish(writer, 0, 1)
        self.broker.flushall()
        self.clock.advance(6)  # the epoch check notices the flush and reports an unbounded gap
        self.assertEqual(self.tail.current(), (1, 0))
        self.assertEqual(self.db.calls, [])
        self.publish(writer, 0, 2)
        self.clock.advance(1)
        self.assertEqual(self.seen, [(0, 1), (0, 2)])

    def test_wait_for(self):
        """wait_for fires once the position is known, or False at its timeout."""
        bus = self.bus()
        self.subscribe(bus)
        d = self.tail.wait_for(0, 2, 5.0)
        self.assertNoResult(d)
        self.publish(bus, 0, 2)
        self.assertTrue(self.successResultOf(d))
        late = self.tail.wait_for(1, 1, 5.0)
        self.clock.advance(5)
        self.assertFalse(self.successResultOf(late))

    def test_non_durable_stream_skips_gaps(self):
        """Typing-like streams never read PostgreSQL; a gap just moves on."""
        tail = StreamTail(self.clock, "typing", 1, None, decode, durable=False)
        tail.start([0])
        resets = []
        tail.add_reset_listener(lambda shard, position: resets.append((shard, position)))
        writer = self.bus(stream_maxlen={"typing": 1})
        for p in (1, 2, 3):
            self.successResultOf(writer.publish("typing", 0, p, {"room_id": "!r:x"}))
        writer.subscribe({ShardId("typing", 0): 0}, tail.on_entry, tail.on_gap)
        self.assertEqual(tail.current(), (3,))
        self.assertEqual(resets, [(0, 3)])

    def test_typing_state_reset(self):
        """After lost typing updates, nobody types in that shard's rooms as of the reset position."""
        from homeserver.handlers.sync.handler import TypingRow, TypingState

        state = TypingState()
        state.on_row(0, TypingRow(5, "!a:x", ("@u:x",)))
        state.on_row(1, TypingRow(6, "!b:x", ("@v:x",)))
        state.on_row(0, TypingRow(7, "!c:x", ()))
        self.assertEqual(state.on_reset(0, 9), ["!a:x"])
        self.assertEqual(state.rooms, {"!a:x": (0, 9, ()), "!b:x": (1, 6, ("@v:x",)), "!c:x": (0, 7, ())})


class ArrivalTests(SynchronousTestCase):
    """When the rows after a token arrived (the sync batching window)."""

    def test_first_arrival_after(self):
        """The earliest arrival among rows after the positions, over all shards; None when there are none."""
        clock = Clock()
        tail = StreamTail(clock, "events", 2, None, decode, capacity=3)
        tail.start([0, 0])

        def entry(shard, position):
            tail.on_entry(attrs.make_class("E", ["shard", "position", "payload"])(shard, position, {"room_id": "!r:x"}))

        clock.advance(10)
        entry(0, 1)
        clock.advance(1)
        entry(1, 2)
        clock.advance(1)
        entry(0, 5)
        self.assertEqual(tail.first_arrival_after([0, 0]), 10)
        self.assertEqual(tail.first_arrival_after([1, 0]), 11)
        self.assertEqual(tail.first_arrival_after([1, 2]), 12)
        self.assertIsNone(tail.first_arrival_after([5, 2]))
        # Rows dropped from the window drop their arrival times with them.
        for p in (6, 7, 8):
            clock.advance(1)
            entry(0, p)
        self.assertEqual(tail.first_arrival_after([0, 2]), 13)  # 6, 7, 8 held (capacity 3)


class NotifierTests(SynchronousTestCase):
    """Long-poll waiters."""
    def test_wakes_by_room_and_user_and_times_out(self):
        """Waiters wake for their rooms or their user only; others time out with False."""
        clock = Clock()
        n = Notifier(clock)
        a = n.wait("@a:x", ["!1:x"], 10)
        b = n.wait("@b:x", ["!2:x"], 10)
        c = n.wait("@c:x", [], 10)
        n.notify_room("!1:x")
        self.assertTrue(self.successResultOf(a))
        self.assertNoResult(b)
        n.notify_user("@c:x")
        self.assertTrue(self.successResultOf(c))
        clock.advance(10)
        self.assertFalse(self.successResultOf(b))
        self.assertEqual(n.waiting(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_generation_moves_with_user_notifications(self):
        """A user's generation moves even when nobody waits, so a sync building its response
        when the wake-up came can tell it missed one."""
        n = Notifier(Clock())
        before = n.generation("@a:x")
        n.notify_user("@a:x")
        n.notify_room("!1:x")
        self.assertEqual(n.generation("@a:x"), before + 1)
        self.assertEqual(n.generation("@b:x"), 0)

class NotifierBatchingTests(SynchronousTestCase):
    """Wake-ups batched over a bounded window (``sync.wake_batch_ms``)."""

    def test_wakes_at_the_end_of_the_window(self):
        """A notification wakes its waiters when the window started by the first one ends, not before."""
        clock = Clock()
        n = Notifier(clock, batch_window=0.01)
        a = n.wait("@a:x", ["!1:x"], 10)
        b = n.wait("@b:x", ["!2:x"], 10)
        c = n.wait("@c:x", ["!3:x"], 10)
        n.notify_room("!1:x")
        clock.advance(0.006)
        self.assertNoResult(a)
        n.notify_room("!2:x")  # joins the running window, does not extend it
        n.notify_room("!1:x")  # already pending: woken once
        clock.advance(0.004)
        self.assertTrue(self.successResultOf(a))
        self.assertTrue(self.successResultOf(b))
        self.assertNoResult(c)
        # A new notification after the window starts a new one.
        n.notify_room("!3:x")
        self.assertNoResult(c)
        clock.advance(0.01)
        self.assertTrue(self.successResultOf(c))
        self.assertEqual(n.waiting(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timeout_inside_the_window(self):
        """A waiter whose timeout falls inside the window answers False once, and the window is then dropped."""
        clock = Clock()
        n = Notifier(clock, batch_window=0.05)
        a = n.wait("@a:x", ["!1:x"], 0.02)
        n.notify_room("!1:x")
        clock.advance(0.02)
        self.assertFalse(self.successResultOf(a))
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(0.05)
        self.assertEqual(n.waiting(), 0)

    def test_waiter_arriving_during_the_window(self):
        """A sync that starts waiting after the notification is not woken by it."""
        clock = Clock()
        n = Notifier(clock, batch_window=0.01)
        a = n.wait("@a:x", ["!1:x"], 10)
        n.notify_room("!1:x")
        late = n.wait("@b:x", ["!1:x"], 10)
        clock.advance(0.01)
        self.assertTrue(self.successResultOf(a))
        self.assertNoResult(late)
        late.cancel()
        self.failureResultOf(late, defer.CancelledError)
        self.assertEqual(n.waiting(), 0)

    def test_negative_window_refused(self):
        """The window cannot be negative."""
        self.assertRaises(ValueError, Notifier, Clock(), -1)
