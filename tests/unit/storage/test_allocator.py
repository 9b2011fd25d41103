"""ShardPositionAllocator callback fan-out, driven by a fake transaction (no database)."""

from twisted.trial import unittest

from storage.streams import Published, ShardPositionAllocator


class FakeTransaction:
    """Stands in for storage.database.Transaction: a sequence and the callback lists."""

    def __init__(self, sequence):
        self.sequence = sequence
        self.statements = []
        self.after = []
        self.on_exception = []

    def execute(self, query, args=None):
        self.statements.append((query, args))

    def fetchone(self):
        return (next(self.sequence),)

    def call_after(self, fn, *args):
        self.after.append((fn, args))

    def call_on_exception(self, fn, *args):
        self.on_exception.append((fn, args))

    def commit(self):
        for fn, args in self.after:
            fn(*args)

    def rollback(self):
        for fn, args in self.on_exception:
            fn(*args)


class AllocatorCallbackTests(unittest.TestCase):
    def setUp(self):
        self.allocator = ShardPositionAllocator("events", 3, current=100)
        self.sequence = iter(range(101, 200))
        self.published = []
        self.advanced = []
        self.allocator.on_publish(self.published.append)
        self.allocator.on_advance(self.advanced.append)

    def txn(self):
        return FakeTransaction(self.sequence)

    def test_draws_from_the_shard_sequence(self):
        """allocate() asks the shard's own sequence for the next value, bound as a parameter."""
        txn = self.txn()
        self.assertEqual(self.allocator.allocate(txn), 101)
        self.assertEqual(txn.statements, [("SELECT nextval(%s::regclass)", ("stream_events_3_seq",))])
        self.assertEqual(self.allocator.in_flight(), frozenset({101}))

    def test_out_of_order_then_rollback(self):
        """Commit of 103 waits for 101 and 102; 102 rolling back lets both go, skipping 102."""
        t1, t2, t3 = self.txn(), self.txn(), self.txn()
        p1, p2, p3 = (self.allocator.allocate(t) for t in (t1, t2, t3))
        self.allocator.attach(p3, "c")
        t3.commit()
        self.assertEqual((self.published, self.advanced), ([], []))
        t1.commit()
        self.assertEqual(self.published, [Published(101, 100, ())])
        self.assertEqual(self.advanced, [101])
        t2.rollback()
        self.assertEqual(self.published, [Published(101, 100, ()), Published(103, 101, ("c",))])
        self.assertEqual(self.advanced, [101, 103])
        self.assertEqual(self.allocator.current_position(), 103)

    def test_failing_listener_does_not_stop_others(self):
        """A publish listener that raises is logged; the next listener still gets the position."""
        seen = []
        allocator = ShardPositionAllocator("typing", 0, current=0)
        allocator.on_publish(lambda p: 1 / 0)
        allocator.on_publish(seen.append)
        txn = FakeTransaction(iter([1]))
        allocator.allocate(txn)
        txn.commit()
        self.assertEqual(seen, [Published(1, 0, ())])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
