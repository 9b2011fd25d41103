"""Account data positions drawn from the sharded stream allocator."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest

from storage.database import Database
from storage.migrations import prepare_database
from storage.stores.account_data import AccountDataStore
from storage.streams import ShardPositionAllocator, ensure_stream_shards
from tests.utils.services import create_test_database


class ShardedPositionsTests(unittest.TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.db = Database(create_test_database(self), reactor, pool_size=4)
        self.addCleanup(self.db.close)
        await prepare_database(self.db)
        await ensure_stream_shards(self.db, {"account_data": 2})
        self.allocators = [await ShardPositionAllocator.create(self.db, "account_data", s) for s in (0, 1)]
        self.published: list = []
        for a in self.allocators:
            a.on_publish(self.published.append)
        # A stand-in shard function: the test pins users to shards.
        shards = {"@a:hs": 0, "@b:hs": 1}
        self.store = AccountDataStore(self.db, allocator_for=lambda user: self.allocators[shards[user]])

    async def test_positions_per_shard_and_published_after_commit(self) -> None:
        """Each user's writes take positions of their shard; changes are published in order."""
        a1 = await self.store.set_account_data("@a:hs", None, "x.y", {"n": 1})
        b1 = await self.store.set_account_data("@b:hs", None, "x.y", {"n": 1})
        a2 = await self.store.update_tags("@a:hs", "!r:hs", "fav", {})
        self.assertEqual((a1, b1, a2), (1, 1, 2))
        self.assertEqual(self.allocators[0].current_position(), 2)
        changes = [p.payloads[0] for p in self.published]
        self.assertEqual([(c.user_id, c.stream_id, c.data_type) for c in changes],
                         [("@a:hs", 1, "x.y"), ("@b:hs", 1, "x.y"), ("@a:hs", 2, "m.tag")])
        rows = await self.store.get_changes_since("@a:hs", 1)
        self.assertEqual([(r[0], r[1]) for r in rows], [("!r:hs", "m.tag")])

    async def test_concurrent_writes_publish_in_order(self) -> None:
        """Concurrent writes of one shard are published in position order."""
        await defer.gatherResults([
            defer.ensureDeferred(self._write(i)) for i in range(10)
        ])
        positions = [p.position for p in self.published]
        self.assertEqual(positions, sorted(positions))
        self.assertEqual(len(positions), 10)

    async def _write(self, i: int) -> int:
        return await self.store.set_account_data("@a:hs", None, f"t.{i}", {"i": i})
