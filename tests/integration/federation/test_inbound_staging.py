"""Staging of received PDUs against PostgreSQL: the store, per-room order, crash
recovery, one processor per room, failures kept for later.

The processors run on a fake clock (leases, sweeps) and the real database;
``process`` is scripted and records what it is asked, in order.
"""

import json

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from homeserver.federation.inbound import InboundPduProcessor
from storage.database import Database
from storage.migrations import prepare_database
from storage.stores.federation_inbound import InboundStagingStore
from tests.utils.services import create_test_database
from tests.utils.wait import wait_until

LEASE_MS = 30_000
ROOM = "!r:a.test"


def pdu(n, room=ROOM):
    return (room, f"$e{n}", json.dumps({"room_id": room, "n": n}))


class StagingTestCase(unittest.TestCase):
    def setUp(self):
        self.db = Database(create_test_database(self), reactor, pool_size=4)
        self.addCleanup(self.db.close)
        self.store = InboundStagingStore(self.db)
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        #: (processor, origin, n) of every call to ``process``, in call order.
        self.calls = []
        return prepare_database(self.db)

    def processor(self, name, process=None, **kw):
        async def record(origin, room_id, pdu_json):
            self.calls.append((name, origin, json.loads(pdu_json)["n"]))
            return {}

        p = InboundPduProcessor(self.clock, name, self.store, process or record, lease_ms=LEASE_MS,
                                sweep_interval_seconds=10, **kw)
        self.addCleanup(lambda: defer.ensureDeferred(p.stop()))
        return p

    def now_ms(self):
        return int(self.clock.seconds() * 1000)

    async def stage(self, txn_id, pdus, origin="b.test"):
        return await self.store.stage_transaction(origin, txn_id, pdus, self.now_ms())

    async def rows(self, sql, args=()):
        def txn_fn(txn):
            txn.execute(sql, args)
            return txn.fetchall()

        return await self.db.run_interaction("test_rows", txn_fn)

    async def staged_count(self):
        return (await self.rows("SELECT COUNT(*) FROM federation_inbound_staging"))[0][0]

    def wait(self, predicate, what):
        return wait_until(reactor, predicate, timeout=15, what=what)


class StoreTests(StagingTestCase):
    async def test_transaction_is_staged_once(self):
        """The first /send stages its PDUs in order; a retry stages nothing and finds them, then the answer."""
        first = await self.stage("t1", [pdu(1), pdu(2, "!other:a.test"), pdu(3)])
        self.assertEqual(first.status, "new")
        self.assertEqual([e for _, _, e in first.staged], ["$e1", "$e2", "$e3"])
        self.assertEqual([i for i, _, _ in first.staged], sorted(i for i, _, _ in first.staged))
        again = await self.stage("t1", [pdu(1), pdu(2, "!other:a.test"), pdu(3), pdu(4)])
        self.assertEqual(again.status, "pending")
        self.assertEqual(again.staged, first.staged)
        self.assertEqual(await self.staged_count(), 3)
        await self.store.store_response("b.test", "t1", '{"pdus":{}}')
        done = await self.stage("t1", [pdu(1)])
        self.assertEqual((done.status, done.response_json), ("done", '{"pdus":{}}'))
        # The same transaction ID from another origin is another transaction.
        other = await self.stage("t1", [pdu(5)], origin="c.test")
        self.assertEqual(other.status, "new")
        self.assertEqual(await self.staged_count(), 4)

    async def test_purge_keeps_transactions_with_staged_rows(self):
        """Old transaction IDs are forgotten once none of their PDUs wait."""
        await self.stage("old-done", [])
        await self.stage("old-waiting", [pdu(1)])
        self.clock.advance(10)
        await self.stage("new", [])
        self.assertEqual(await self.store.purge_transactions(self.now_ms() - 5000), 1)
        self.assertEqual(sorted(r[0] for r in await self.rows("SELECT txn_id FROM federation_inbound_transactions")),
                         ["new", "old-waiting"])

    async def test_leases_exclude_other_holders_until_they_expire(self):
        """A room's lease is held by one holder; it can be taken after expiry, or by the holder's next life."""
        now = self.now_ms()
        self.assertTrue(await self.store.acquire_lease(ROOM, "in1", "tok1", now, LEASE_MS))
        self.assertTrue(await self.store.acquire_lease(ROOM, "in1", "tok1", now, LEASE_MS))
        self.assertFalse(await self.store.acquire_lease(ROOM, "in2", "tok2", now + LEASE_MS - 1, LEASE_MS))
        self.assertTrue(await self.store.acquire_lease(ROOM, "in2", "tok2", now + LEASE_MS + 1, LEASE_MS))
        self.assertFalse(await self.store.acquire_lease(ROOM, "in1", "tok1", now + LEASE_MS + 2, LEASE_MS))
        self.assertEqual(await self.store.release_previous_leases("in2", "tok3"), 1)
        self.assertTrue(await self.store.acquire_lease(ROOM, "in1", "tok1", now, LEASE_MS))


class ProcessorTests(StagingTestCase):
    async def test_rows_processed_in_arrival_order_and_deleted(self):
        """Two transactions into one room: processed in arrival order, results returned, rows gone."""
        p = self.processor("in1")
        a = await self.stage("t1", [pdu(1), pdu(2)])
        b = await self.stage("t2", [pdu(3), pdu(4, "!other:a.test")], origin="c.test")
        results = await p.wait_for([(i, r) for i, r, _ in a.staged + b.staged])
        self.assertEqual(sorted(results), sorted(i for i, _, _ in a.staged + b.staged))
        self.assertEqual([n for _, _, n in self.calls if n != 4], [1, 2, 3])
        self.assertEqual(sorted(n for _, _, n in self.calls), [1, 2, 3, 4])
        self.assertEqual(await self.staged_count(), 0)
        self.assertEqual(await self.rows("SELECT room_id FROM federation_inbound_room_leases"), [])

    async def test_crash_before_processing_is_recovered_exactly_once_in_order(self):
        """Rows staged by an instance that died holding the room's lease are processed once, in order, after expiry."""
        crashed = self.processor("in1")
        await self.stage("t1", [pdu(1), pdu(2)])
        await self.stage("t2", [pdu(3)], origin="c.test")
        # The crashed instance had taken the room's lease and died before processing anything.
        self.assertTrue(await self.store.acquire_lease(ROOM, crashed.holder, crashed.token, self.now_ms(), LEASE_MS))
        del crashed

        survivor = self.processor("in2")
        await survivor.sweep()
        await survivor.when_idle(ROOM)
        self.assertEqual(self.calls, [])  # the dead instance's lease still holds
        self.clock.advance(LEASE_MS / 1000 + 1)
        await survivor.sweep()
        await survivor.when_idle(ROOM)
        self.assertEqual(self.calls, [("in2", "b.test", 1), ("in2", "b.test", 2), ("in2", "c.test", 3)])
        self.assertEqual(await self.staged_count(), 0)
        # Further sweeps find nothing: exactly once.
        for _ in range(2):
            await survivor.sweep()
            await survivor.when_idle(ROOM)
        self.assertEqual(len(self.calls), 3)

    async def test_restart_under_the_same_name_takes_its_rooms_back_at_once(self):
        """An instance restarted under its name needs no lease expiry to resume its rooms."""
        before = self.processor("in1")
        await self.stage("t1", [pdu(1), pdu(2)])
        self.assertTrue(await self.store.acquire_lease(ROOM, before.holder, before.token, self.now_ms(), LEASE_MS))
        after = self.processor("in1")
        after.start()
        await self.wait(lambda: len(self.calls) == 2, "processing after the restart")
        self.assertEqual([n for _, _, n in self.calls], [1, 2])

    async def test_two_processors_never_run_one_room_concurrently(self):
        """While one instance processes a room, another cannot; rows it staged meanwhile are processed by the holder."""
        gate = defer.Deferred()
        running = []
        overlap = []

        def gated(name):
            async def process(origin, room_id, pdu_json):
                n = json.loads(pdu_json)["n"]
                running.append(name)
                if len(running) > 1:
                    overlap.append((name, n))
                try:
                    self.calls.append((name, origin, n))
                    if n == 1:
                        await gate
                    return {}
                finally:
                    running.remove(name)

            return process

        p1 = self.processor("in1", gated("in1"))
        p2 = self.processor("in2", gated("in2"))
        first = await self.stage("t1", [pdu(1), pdu(2)])
        waiting = defer.ensureDeferred(p1.wait_for([(i, r) for i, r, _ in first.staged], timeout=60))
        await self.wait(lambda: self.calls, "in1 to start on the room")
        # in2 receives a transaction for the same room while in1 holds it.
        second = await self.stage("t2", [pdu(3)], origin="c.test")
        p2.kick(ROOM)
        await p2.when_idle(ROOM)
        self.assertEqual([c[0] for c in self.calls], ["in1"])
        gate.callback(None)
        results = await waiting
        await self.wait(lambda: len(self.calls) == 3 and ROOM not in p1._active, "in1 to drain the room")
        self.assertEqual(self.calls, [("in1", "b.test", 1), ("in1", "b.test", 2), ("in1", "c.test", 3)])
        self.assertEqual(overlap, [])
        self.assertEqual(sorted(results), [i for i, _, _ in first.staged])
        self.assertEqual(await self.store.still_staged([i for i, _, _ in second.staged]), set())

    async def test_other_holder_is_waited_for_until_deadline(self):
        """A request whose room another instance holds polls until the rows are gone or the deadline passes."""
        p = self.processor("in2")
        staged = await self.stage("t1", [pdu(1)])
        self.assertTrue(await self.store.acquire_lease(ROOM, "in1", "other", self.now_ms(), LEASE_MS))
        waiting = defer.ensureDeferred(p.wait_for([(i, r) for i, r, _ in staged.staged], timeout=5))
        for _ in range(30):
            await self.wait(lambda: ROOM not in p._active, "an attempt at the room")
            self.clock.advance(0.2)
        results = await waiting
        self.assertEqual((results, self.calls), ({}, []))
        self.assertEqual(await self.staged_count(), 1)

    async def test_lease_is_renewed_while_one_pdu_takes_long(self):
        """A holder busy on one PDU for longer than the lease keeps the room."""
        gate = defer.Deferred()

        async def slow(origin, room_id, pdu_json):
            self.calls.append(("in1", origin, json.loads(pdu_json)["n"]))
            await gate
            return {}

        p1 = self.processor("in1", slow)
        p2 = self.processor("in2")
        await self.stage("t1", [pdu(1)])
        p1.kick(ROOM)
        await self.wait(lambda: self.calls, "in1 to start")
        for step in range(9):
            self.clock.advance(LEASE_MS / 3000)
            expected = self.now_ms() + LEASE_MS - int(LEASE_MS / 3) - 1

            async def renewed():
                rows = await self.rows("SELECT expires_ts FROM federation_inbound_room_leases WHERE room_id = %s", (ROOM,))
                return rows and rows[0][0] >= expected

            await self.wait(renewed, "the lease renewal")
        p2.kick(ROOM)
        await p2.when_idle(ROOM)
        self.assertEqual(len(self.calls), 1)
        gate.callback(None)
        await p1.when_idle(ROOM)
        self.assertEqual(await self.staged_count(), 0)

    async def test_failures_keep_the_row_and_the_room_order(self):
        """A PDU whose processing fails stays staged (later ones wait behind it); retried by the sweep, dropped after max_attempts."""
        failures = []

        async def flaky(origin, room_id, pdu_json):
            n = json.loads(pdu_json)["n"]
            self.calls.append(("in1", origin, n))
            if n == 1:
                failures.append(n)
                raise ConnectionRefusedError("the events writer is down")
            return {}

        p = self.processor("in1", flaky, max_attempts=2)
        staged = await self.stage("t1", [pdu(1), pdu(2)])
        results = await p.wait_for([(i, r) for i, r, _ in staged.staged], timeout=5)
        self.assertEqual(results, {})
        self.assertEqual([n for _, _, n in self.calls], [1])
        self.assertEqual(await self.rows("SELECT event_id, attempts FROM federation_inbound_staging ORDER BY id"),
                         [("$e1", 1), ("$e2", 0)])
        self.assertIn(ROOM, p.stalled)
        p.start()  # the sweep retries; the second failure reaches max_attempts and the row is dropped
        await self.wait(lambda: len(self.calls) == 3 and ROOM not in p._active, "the retry")
        self.assertEqual([n for _, _, n in self.calls], [1, 1, 2])
        self.assertEqual(await self.staged_count(), 0)
        self.assertNotIn(ROOM, p.stalled)
