"""Stream shard sequences and ordered position release against a real PostgreSQL."""

import random
import threading

import psycopg2
from twisted.internet import defer, reactor
from twisted.trial import unittest

from storage.database import Database
from storage.migrations import prepare_database
from storage.retry import RetryPolicy
from storage.streams import (
    Published,
    ShardCountMismatchError,
    ShardPositionAllocator,
    ensure_stream_shards,
)
from tests.utils.services import create_test_database

RAISE_SERIALIZATION = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$"


class Rollback(Exception):
    """Raised by a test transaction to make it roll back."""


class StreamTestCase(unittest.TestCase):
    async def setUp(self):
        self.dsn = create_test_database(self)
        self.db = self.database()
        await prepare_database(self.db)

    def database(self, pool_size=4):
        db = Database(
            self.dsn, reactor, pool_size=pool_size, retry_policy=RetryPolicy(base_delay=0.001, max_delay=0.005)
        )
        self.addCleanup(db.close)
        return db

    def query(self, q, args=None):
        """Rows of ``q`` run on a fresh connection."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(q, args)
                return cur.fetchall()
        finally:
            conn.close()


class EnsureShardsTests(StreamTestCase):
    async def test_creates_one_sequence_per_shard(self):
        """Every (stream, shard) gets its own sequence and the shard counts are recorded."""
        await ensure_stream_shards(self.db, {"events": 3, "typing": 1})
        self.assertEqual(
            self.query("SELECT sequencename FROM pg_sequences WHERE sequencename LIKE 'stream_%%' ORDER BY 1"),
            [("stream_events_0_seq",), ("stream_events_1_seq",), ("stream_events_2_seq",), ("stream_typing_0_seq",)],
        )
        self.assertEqual(
            self.query("SELECT stream, shard_count FROM stream_shards ORDER BY stream"), [("events", 3), ("typing", 1)]
        )

    async def test_idempotent_and_additive(self):
        """Running again changes nothing; a new stream can be added; omitted streams stay."""
        await ensure_stream_shards(self.db, {"events": 2})
        await ensure_stream_shards(self.db, {"events": 2})
        await ensure_stream_shards(self.db, {"receipts": 2})
        self.assertEqual(self.query("SELECT count(*) FROM pg_sequences WHERE sequencename LIKE 'stream_%%'"), [(4,)])

    async def test_shard_count_change_refused(self):
        """Starting with a different shard count for an existing stream is refused, changing nothing."""
        await ensure_stream_shards(self.db, {"events": 4})
        with self.assertRaises(ShardCountMismatchError) as cm:
            await ensure_stream_shards(self.db, {"events": 8, "typing": 1})
        self.assertEqual((cm.exception.stream, cm.exception.configured, cm.exception.recorded), ("events", 8, 4))
        self.assertEqual(self.query("SELECT stream, shard_count FROM stream_shards"), [("events", 4)])

    def test_invalid_config_refused(self):
        """Bad stream names and shard counts are rejected before touching the database."""
        for config in ({"Events": 1}, {"events": 0}, {"events": True}, {"events": "4"}, {'x"; DROP': 1}):
            self.assertRaises(ValueError, ensure_stream_shards, self.db, config)

    async def test_concurrent_workers(self):
        """Several workers ensuring the same shards at once all succeed."""
        dbs = [self.database(pool_size=1) for _ in range(4)]
        await defer.gatherResults(
            [ensure_stream_shards(db, {"events": 8, "to_device": 4}) for db in dbs], consumeErrors=True
        )
        self.assertEqual(self.query("SELECT count(*) FROM pg_sequences WHERE sequencename LIKE 'stream_%%'"), [(12,)])


class AllocatorTests(StreamTestCase):
    async def setUp(self):
        await super().setUp()
        await ensure_stream_shards(self.db, {"events": 2})
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE facts (position BIGINT PRIMARY KEY, shard INTEGER NOT NULL)")
        conn.close()
        self.allocator = await ShardPositionAllocator.create(self.db, "events", 1)
        self.published = []
        self.advanced = []
        self.allocator.on_publish(self.published.append)
        self.allocator.on_advance(self.advanced.append)

    def write_fact(self, txn, payload=None):
        position = self.allocator.allocate(txn)
        txn.execute("INSERT INTO facts VALUES (%s, 1)", (position,))
        if payload is not None:
            self.allocator.attach(position, payload)
        return position

    def blocked_writer(self, name, fail=False):
        """Start a transaction that allocates a position then waits.

        Returns (allocated, release, done): ``allocated`` fires on the reactor
        with the position once it is drawn; ``release()`` lets the
        transaction finish (commit, or roll back if ``fail``); ``done`` is the
        interaction's Deferred.
        """
        allocated = defer.Deferred()
        go = threading.Event()

        def txn_fn(txn):
            position = self.write_fact(txn, name)
            reactor.callFromThread(allocated.callback, position)
            if not go.wait(10):
                raise AssertionError("never released")
            if fail:
                raise Rollback()
            return position

        done = self.db.run_interaction("test_blocked_" + name, txn_fn)
        return allocated, go.set, done

    async def test_positions_start_after_existing(self):
        """A new allocator starts at the sequence's last value; positions continue from there."""
        self.assertEqual(self.allocator.current_position(), 0)
        p1 = await self.db.run_interaction("test_alloc", self.write_fact)
        p2 = await self.db.run_interaction("test_alloc", self.write_fact)
        self.assertEqual((p1, p2), (1, 2))
        self.assertEqual(self.allocator.current_position(), 2)
        restarted = await ShardPositionAllocator.create(self.db, "events", 1)
        self.assertEqual(restarted.current_position(), 2)
        other_shard = await ShardPositionAllocator.create(self.db, "events", 0)
        self.assertEqual(other_shard.current_position(), 0)

    async def test_publish_after_commit(self):
        """A committed position is published (with its payloads) before run_interaction returns."""
        position = await self.db.run_interaction("test_alloc", self.write_fact, {"room": "!a"})
        self.assertEqual(self.published, [Published(position, 0, ({"room": "!a"},))])
        self.assertEqual(self.advanced, [position])

    async def test_out_of_order_commit_waits(self):
        """When 2 commits before 1, 2 is published only once 1 has committed, and in order."""
        allocated1, release1, done1 = self.blocked_writer("first")
        p1 = await allocated1
        p2 = await self.db.run_interaction("test_second", self.write_fact, "second")
        self.assertEqual((p1, p2), (1, 2))
        # 2 is committed in PostgreSQL, but 1 may still commit: nothing is published yet.
        self.assertEqual(self.query("SELECT position FROM facts"), [(2,)])
        self.assertEqual(self.published, [])
        self.assertEqual(self.allocator.current_position(), 0)
        self.assertEqual(self.allocator.in_flight(), frozenset({1}))
        release1()
        await done1
        self.assertEqual(self.published, [Published(1, 0, ("first",)), Published(2, 1, ("second",))])
        self.assertEqual(self.advanced, [2])

    async def test_rolled_back_position_skipped(self):
        """A position whose transaction rolls back unblocks later ones and is never published."""
        allocated1, release1, done1 = self.blocked_writer("doomed", fail=True)
        await allocated1
        await self.db.run_interaction("test_second", self.write_fact, "second")
        self.assertEqual(self.published, [])
        release1()
        with self.assertRaises(Rollback):
            await done1
        self.assertEqual(self.published, [Published(2, 0, ("second",))])
        self.assertEqual(self.allocator.current_position(), 2)
        self.assertEqual(self.query("SELECT position FROM facts"), [(2,)])

    async def test_retried_attempt_releases_its_position(self):
        """An attempt that fails transiently gives its position up; the retry draws a new one."""
        attempts = []

        def flaky(txn):
            position = self.write_fact(txn, "payload")
            attempts.append(position)
            if len(attempts) == 1:
                txn.execute(RAISE_SERIALIZATION)
            return position

        position = await self.db.run_interaction("test_flaky", flaky)
        self.assertEqual(attempts, [1, 2])
        self.assertEqual(position, 2)
        self.assertEqual(self.published, [Published(2, 0, ("payload",))])
        self.assertEqual(self.allocator.in_flight(), frozenset())
        self.assertEqual(self.allocator.current_position(), 2)

    async def test_concurrent_writers_publish_in_order(self):
        """Many concurrent transactions, some rolling back: publication is in position order,
        complete, and every position is published only after all smaller committed ones are visible."""
        rng = random.Random(99)
        violations = []

        def check_visible(published):
            # Everything committed at or below this position must already be in the table.
            rows = {p for (p,) in self.query("SELECT position FROM facts WHERE position <= %s", (published.position,))}
            expected = {p.position for p in self.published if p.position <= published.position} | {published.position}
            if not expected <= rows:
                violations.append((published.position, sorted(expected - rows)))

        self.allocator.on_publish(check_visible)

        def maybe_fail(txn, fail, extra):
            position = self.write_fact(txn, "many")
            for _ in range(extra):  # vary transaction length so commits interleave
                txn.execute("SELECT count(*) FROM facts")
            if fail:
                raise Rollback()
            return position

        plans = [(rng.random() < 0.25, rng.randint(0, 5)) for _ in range(40)]
        results = await defer.DeferredList(
            [self.db.run_interaction("test_many", maybe_fail, fail, extra) for fail, extra in plans],
            consumeErrors=True,
        )
        committed = sorted(r for ok, r in results if ok)
        for ok, r in results:
            if not ok:
                r.trap(Rollback)
        self.assertEqual(len(committed), sum(1 for fail, _ in plans if not fail))
        self.assertEqual([p.position for p in self.published], committed)
        self.assertEqual([p.previous for p in self.published], [0] + committed[:-1])
        self.assertTrue(all(p.payloads == ("many",) for p in self.published))
        self.assertEqual(violations, [])
        self.assertEqual(self.allocator.current_position(), 40)
        self.assertEqual(self.allocator.in_flight(), frozenset())
