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
        changes = [(p.position, p.payloads[0]) for p in self.published]
        self.assertEqual(changes, [(1, {"user_id": "@a:hs", "room_id": None, "type": "x.y"}),
                                   (1, {"user_id": "@b:hs", "room_id": None, "type": "x.y"}),
                                   (2, {"user_id": "@a:hs", "room_id": "!r:hs", "type": "m.tag"})])
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

    async def test_user_of_a_shard_not_owned_is_refused(self) -> None:
        """A write for a user whose shard has no allocator here fails and stores nothing."""
        store = AccountDataStore(self.db, allocator_for=lambda user: None)
        with self.assertRaises(RuntimeError):
            await store.set_account_data("@c:hs", None, "x.y", {"n": 1})
        self.assertIsNone(await store.get_account_data("@c:hs", None, "x.y"))

    async def test_sequence_raised_above_stored_positions(self) -> None:
        """raise_sequence_above: a shard that replaces the global sequence starts past every stored position."""
        from storage.streams import raise_sequence_above

        plain = AccountDataStore(self.db)
        for i in range(5):
            await plain.set_account_data("@a:hs", None, f"old.{i}", {})
        floor = await plain.max_stream_id()
        await raise_sequence_above(self.db, "account_data", 0, floor)
        allocator = await ShardPositionAllocator.create(self.db, "account_data", 0)
        store = AccountDataStore(self.db, allocator_for=lambda user: allocator)
        position = await store.set_account_data("@a:hs", None, "new", {})
        self.assertGreater(position, floor)
        await raise_sequence_above(self.db, "account_data", 0, 1)  # never lowers
        self.assertGreater(await store.set_account_data("@a:hs", None, "newer", {}), position)
