"""The caches stream: a logout on one process evicts the token cache of every other."""

import itertools
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bus.memory import MemoryBroker, MemoryBus
from homeserver.handlers.auth import Authenticator
from workers.caches import CacheInvalidations, caches_shard, wire_token_invalidation


class FakeSequenceDatabase:
    """``run_interaction`` over a fake cursor whose nextval counts up (one sequence, shared)."""

    def __init__(self, counter):
        self.counter = counter

    def run_interaction(self, name, fn):
        counter = self.counter

        class Txn:
            def execute(self, sql, args=None):
                self.last = sql

            def fetchone(self):
                return (next(counter),)

        return defer.succeed(fn(Txn()))


class FakeAccounts:
    def __init__(self):
        self.lookups = 0
        self.valid = {b"tok-a"}

    def get_access_token(self, token_hash):
        self.lookups += 1
        return defer.succeed(SimpleNamespace(
            user_id="@a:hs", device_id="D", is_guest=False, token_id=1, is_admin=False, deactivated=False,
            valid_until_ms=None, refresh_token_id=None, used=True,
        ))


class CachesStreamTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        counter = itertools.count(1)
        self.procs = {}
        for name in ("reader", "writer"):
            accounts = FakeAccounts()
            auth = Authenticator(self.clock, accounts, cache_ms=60000)
            bus = MemoryBus(self.clock, self.broker)
            inv = CacheInvalidations(FakeSequenceDatabase(counter), bus, caches_shard(["reader", "writer"], name), 2,
                                     {}, auth.evict_all)
            wire_token_invalidation(auth, inv)
            inv.start()
            self.addCleanup(inv.stop)
            self.procs[name] = SimpleNamespace(auth=auth, accounts=accounts, bus=bus, inv=inv)
        self.clock.advance(0)

    def authenticate(self, name):
        self.successResultOf(defer.ensureDeferred(self.procs[name].auth.get_user_by_access_token("tok-a")))

    def test_logout_elsewhere_evicts_here(self):
        """A user's tokens cached on the reader are looked up again after the writer invalidates them."""
        reader = self.procs["reader"]
        self.authenticate("reader")
        self.authenticate("reader")
        self.assertEqual(reader.accounts.lookups, 1, "second use served from the cache")
        self.procs["writer"].auth.invalidate_user("@a:hs")
        self.clock.advance(0.1)
        self.authenticate("reader")
        self.assertEqual(reader.accounts.lookups, 2, "the writer's invalidation reached the reader")

    def test_gap_clears_everything(self):
        """Announcements lost in Redis (a flush) make consumers clear their caches wholesale."""
        reader = self.procs["reader"]
        self.procs["writer"].auth.invalidate_user("@nobody:hs")
        self.clock.advance(0.1)
        self.authenticate("reader")
        self.assertEqual(reader.accounts.lookups, 1)
        self.broker.flushall()
        # The next announcement names a prev the reader never saw (lost in the flush).
        self.procs["writer"].auth.invalidate_user("@other:hs")
        self.procs["writer"].auth.invalidate_user("@other2:hs")
        self.clock.advance(6)
        self.authenticate("reader")
        self.assertEqual(reader.accounts.lookups, 2, "cache cleared on the gap")

    def test_shards_by_sorted_name(self):
        """Each instance publishes on its own shard: its index among the sorted names."""
        self.assertEqual([caches_shard(["b", "a", "c"], n) for n in "abc"], [0, 1, 2])
