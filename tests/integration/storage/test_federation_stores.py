"""The federation stores against PostgreSQL: key rows, backoff rows, queue claims."""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest

from storage.database import Database
from storage.migrations import prepare_database
from storage.stores.federation import FederationQueueStore
from storage.stores.server_keys import ServerKeyStore
from tests.utils.services import create_test_database


class StoreTestCase(unittest.TestCase):
    def setUp(self):
        self.db = Database(create_test_database(self), reactor, pool_size=2)
        self.addCleanup(self.db.close)
        return prepare_database(self.db)


class ServerKeyStoreTests(StoreTestCase):
    async def test_newest_statement_wins(self):
        """The most recently fetched statement about a key is returned; older ones never overwrite newer."""
        store = ServerKeyStore(self.db)
        await store.store_key_response("s.test", "s.test", 100, '{"v":1}', [("ed25519:a", "KEY", 500, None)])
        await store.store_key_response("s.test", "n.test", 200, '{"v":2}', [("ed25519:a", "KEY", 900, None), ("ed25519:o", "OLD", 50, 50)])
        await store.store_key_response("s.test", "s.test", 50, '{"v":0}', [("ed25519:a", "KEY", 9999, None)])
        keys = await store.get_server_keys("s.test", ["ed25519:a", "ed25519:o", "ed25519:x"])
        self.assertEqual((keys["ed25519:a"].from_server, keys["ed25519:a"].valid_until_ts), ("n.test", 900))
        self.assertEqual(keys["ed25519:o"].expired_ts, 50)
        self.assertNotIn("ed25519:x", keys)
        jsons = await store.get_key_jsons("s.test")
        self.assertEqual([j.key_json for j in jsons], ['{"v":2}', '{"v":1}'])
        self.assertEqual([j.key_json for j in await store.get_key_jsons("s.test", ["ed25519:o"])], ['{"v":2}'])
        self.assertEqual(await store.get_key_jsons("other.test"), [])


class QueueStoreTests(StoreTestCase):
    async def test_claim_complete_and_destinations(self):
        """A claim is stable until completed; completion removes exactly its rows; destinations with work are listed."""
        store = FederationQueueStore(self.db)
        for i in range(3):
            await store.enqueue_pdu(["b.test", "c.test"], f"$e{i}", json.dumps({"i": i}), 0)
        self.assertEqual(await store.enqueue_pdu(["b.test"], "$e0", "{}", 0), [])
        await store.enqueue_edu("d.test", '{"edu_type":"x"}', None, 0)
        self.assertEqual(await store.destinations_with_work(), ["b.test", "c.test", "d.test"])

        calls = []

        def make_body(pdus, edus):
            calls.append((pdus, edus))
            return f"t{len(calls)}", json.dumps({"pdus": pdus})

        first = await store.claim_transaction("b.test", make_body, 2, 10, 0)
        self.assertEqual((first.txn_id, first.pdu_count, first.edu_count, first.retry), ("t1", 2, 0, False))
        again = await store.claim_transaction("b.test", make_body, 2, 10, 0)
        self.assertEqual((again.txn_id, again.body, again.retry), ("t1", first.body, True))
        self.assertEqual(len(calls), 1)
        self.assertTrue(await store.complete_transaction("b.test", "t1"))
        self.assertFalse(await store.complete_transaction("b.test", "t1"))
        second = await store.claim_transaction("b.test", make_body, 2, 10, 0)
        self.assertEqual(json.loads(second.body)["pdus"], ['{"i": 2}'])
        await store.complete_transaction("b.test", second.txn_id)
        self.assertIsNone(await store.claim_transaction("b.test", make_body, 2, 10, 0))
        self.assertEqual(await store.queue_length("b.test"), 0)
        self.assertEqual(await store.queue_length("c.test"), 3)

    async def test_concurrent_claims_one_transaction(self):
        """Racing claims for one destination produce a single transaction in flight."""
        store = FederationQueueStore(self.db)
        await store.enqueue_pdu(["b.test"], "$e", "{}", 0)
        ids = iter(["x", "y"])
        results = await defer.gatherResults([
            defer.ensureDeferred(_claim(store, lambda p, e: (next(ids), "{}"))) for _ in range(2)
        ])
        self.assertEqual({r.txn_id for r in results}, {results[0].txn_id})

    async def test_backoff_rows(self):
        """Backoff state round-trips and is absent for unknown destinations."""
        store = FederationQueueStore(self.db)
        self.assertIsNone(await store.get_destination_retry("b.test"))
        await store.set_destination_retry("b.test", 2, 10, 20)
        self.assertEqual(await store.get_destination_retry("b.test"), (2, 10, 20))


async def _claim(store, make_body):
    return await store.claim_transaction("b.test", make_body, 50, 100, 0)


class CatchUpTests(StoreTestCase):
    async def test_collapse_to_newest_per_room(self):
        """Past the threshold only the newest PDU of each room remains; room-less PDUs and EDUs stay."""
        store = FederationQueueStore(self.db)
        for i in range(6):
            await store.enqueue_pdu(["b.test"], f"$r1_{i}", json.dumps({"e": f"$r1_{i}"}), 0, room_id="!r1")
        for i in range(2):
            await store.enqueue_pdu(["b.test"], f"$r2_{i}", json.dumps({"e": f"$r2_{i}"}), 0, room_id="!r2")
        await store.enqueue_pdu(["b.test"], "$none", json.dumps({"e": "$none"}), 0)
        await store.enqueue_edu("b.test", '{"edu_type":"x"}', None, 0)
        await store.enqueue_pdu(["c.test"], "$r1_0", json.dumps({"e": "$r1_0"}), 0, room_id="!r1")

        def body(pdus, edus):
            return "t", json.dumps({"pdus": [json.loads(p)["e"] for p in pdus], "edus": len(edus)})

        below = await store.claim_transaction("c.test", body, 50, 100, 0, catch_up_threshold=1)
        self.assertEqual(json.loads(below.body)["pdus"], ["$r1_0"])
        claimed = await store.claim_transaction("b.test", body, 50, 100, 0, catch_up_threshold=8)
        self.assertEqual(json.loads(claimed.body), {"pdus": ["$r1_5", "$r2_1", "$none"], "edus": 1})


class _NoDatabase:
    """A database that fails every interaction: proves a call needs no round trip."""

    def run_interaction(self, desc, fn, *args, **kwargs):
        raise AssertionError(f"unexpected database interaction {desc}")


class ReceivedEventStoreTests(StoreTestCase):
    async def test_rejected_events_and_the_empty_lookup(self):
        """Rejected/soft-failed kinds are read back per room; asking about no events costs no round trip."""
        from storage.stores.federation_events import FederationEventStore

        store = FederationEventStore(self.db)
        await store.record_rejected("!r:s", "$a", "rejected", "bad auth", "o.test", "{}", 1)
        await store.record_rejected("!r:s", "$b", "soft_failed", "current state", "o.test", "{}", 1)
        got = await store.get_rejected("!r:s", ["$a", "$b", "$c", "$a"])
        self.assertEqual(got, {"$a": ("rejected", "bad auth"), "$b": ("soft_failed", "current state")})
        self.assertEqual(await store.get_rejected("!other:s", ["$a"]), {})
        self.assertEqual(await FederationEventStore(_NoDatabase()).get_rejected("!r:s", []), {})

    async def test_one_current_state_entry(self):
        """get_current_state_id reads one entry of one room's current state."""
        from storage.stores.events import EventStore

        def insert(txn):
            txn.execute(
                "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES"
                " ('!r:s', 'm.room.server_acl', '', '$acl'), ('!r:s', 'm.room.member', '@u:s', '$m'),"
                " ('!o:s', 'm.room.server_acl', '', '$other')"
            )

        await self.db.run_interaction("insert", insert)
        store = EventStore(self.db)
        self.assertEqual(await store.get_current_state_id("!r:s", "m.room.server_acl", ""), "$acl")
        self.assertEqual(await store.get_current_state_id("!o:s", "m.room.server_acl", ""), "$other")
        self.assertIsNone(await store.get_current_state_id("!r:s", "m.room.server_acl", "x"))
        self.assertIsNone(await store.get_current_state_id("!n:s", "m.room.server_acl", ""))
