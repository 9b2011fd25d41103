"""The transaction sender against a real receiving stack: batching, backoff,
retry with the same transaction ID, catch-up, drops, crash recovery."""

import json

from twisted.internet import defer, reactor

from homeserver.federation.sender import FederationSender
from homeserver.http.server import parse_json_object
from tests.utils.federation import FederationTestCase
from tests.utils.wait import wait_until


class Receiver:
    """A ``PUT /send/{txnId}`` endpoint on a LocalHomeserver that records what arrives."""

    def __init__(self, hs):
        self.mode = "ok"
        self.attempts = []  # (txn_id, body) of every authenticated attempt
        self.accepted = []  # (txn_id, body) of transactions answered 200, deduplicated by ID
        self._seen = set()

        async def send(request, origin, txnId):
            body = parse_json_object(request)
            assert body["origin"] == origin
            self.attempts.append((txnId, body))
            if self.mode == "fail":
                return 500, {"errcode": "M_UNKNOWN", "error": "down for maintenance"}
            if self.mode == "reject":
                return 400, {"errcode": "M_BAD_JSON", "error": "no"}
            if txnId not in self._seen:
                self._seen.add(txnId)
                self.accepted.append((txnId, body))
            return 200, {"pdus": {p["event_id"]: {} for p in body["pdus"]}}

        hs.resource.register("PUT", "/_matrix/federation/v1/send/{txnId}", hs.authenticator.wrap(send), name="send")

    def pdu_ids(self):
        return [p["event_id"] for _, body in self.accepted for p in body["pdus"]]


def pdu(n, event_id=None):
    return {"event_id": event_id or f"$e{n:04d}", "type": "m.room.message", "content": {"n": n}}


class SenderTestCase(FederationTestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.a = self.server("a.test")
        self.b = self.server("b.test")
        self.receiver = Receiver(self.b)

    def sender(self, instance="fs1", instances=("fs1",), poll=60.0):
        s = FederationSender(reactor, self.a.server_name, instance, instances, self.a.queue_store, self.a.client,
                             self.a.backoff, poll_interval_seconds=poll)
        self.addCleanup(lambda: defer.ensureDeferred(s.stop()))
        return s

    async def queue_empty(self):
        return (await self.a.queue_store.queue_length(self.b.server_name)) == 0 and not self.rows(
            "SELECT 1 FROM federation_transactions_in_flight")

    def wait(self, predicate, what):
        return wait_until(reactor, predicate, timeout=15, what=what)


class BatchingTests(SenderTestCase):
    async def test_batch_sizes_and_order(self):
        """120 PDUs and 150 EDUs go as 50+100, 50+50, 20+0, in queue order, one transaction at a time."""
        now = self.a.keyring.now_ms()
        for n in range(120):
            await self.a.queue_store.enqueue_pdu([self.b.server_name], pdu(n)["event_id"], json.dumps(pdu(n)), now)
        for n in range(150):
            await self.a.queue_store.enqueue_edu(self.b.server_name, json.dumps({"edu_type": "x", "content": {"n": n}}), None, now)
        self.sender().start()
        await self.wait(self.queue_empty, "queue drained")
        sizes = [(len(b["pdus"]), len(b["edus"])) for _, b in self.receiver.accepted]
        self.assertEqual(sizes, [(50, 100), (50, 50), (20, 0)])
        self.assertEqual(self.receiver.pdu_ids(), [pdu(n)["event_id"] for n in range(120)])
        edus = [e["content"]["n"] for _, b in self.receiver.accepted for e in b["edus"]]
        self.assertEqual(edus, list(range(150)))
        self.assertEqual(len(self.receiver.attempts), 3)

    async def test_enqueue_interface(self):
        """enqueue_pdu skips ourselves and duplicates; coalesced EDUs keep only the latest."""
        s = self.sender()
        await s.enqueue_pdu([self.b.server_name, self.a.server_name], "$x", pdu(1, "$x"))
        await self.wait(self.queue_empty, "first PDU sent")
        self.receiver.mode = "fail"
        await s.enqueue_edu(self.b.server_name, {"edu_type": "m.typing", "content": {"v": 1}}, coalesce_key="m.typing:!r")
        await s.enqueue_pdu([self.b.server_name], "$y", pdu(2, "$y"))
        await s.enqueue_pdu([self.b.server_name], "$y", pdu(2, "$y"))
        await self.wait(lambda: self.rows("SELECT 1 FROM federation_transactions_in_flight"), "a transaction in flight")
        await s.enqueue_edu(self.b.server_name, {"edu_type": "m.typing", "content": {"v": 2}}, coalesce_key="m.typing:!r")
        await s.enqueue_edu(self.b.server_name, {"edu_type": "m.typing", "content": {"v": 3}}, coalesce_key="m.typing:!r")
        self.receiver.mode = "ok"
        await self.wait(self.queue_empty, "queue drained")
        typing = [e["content"]["v"] for _, b in self.receiver.accepted for e in b["edus"]]
        self.assertEqual(typing, [1, 3])
        self.assertEqual(self.receiver.pdu_ids().count("$y"), 1)


class RetryTests(SenderTestCase):
    async def test_down_backoff_same_txn_then_catch_up(self):
        """A failing destination gets the same transaction again after growing delays, then the backlog."""
        self.receiver.mode = "fail"
        s = self.sender()
        for n in range(3):
            await s.enqueue_pdu([self.b.server_name], pdu(n)["event_id"], pdu(n))
        await self.wait(lambda: len(self.receiver.attempts) >= 3, "three attempts")
        # The third failure is recorded after the receiver answered it.
        await self.wait(lambda: self.rows("SELECT 1 FROM federation_destinations WHERE failure_count >= 3"),
                        "the third failure to be recorded")
        ids = {txn for txn, _ in self.receiver.attempts}
        self.assertEqual(len(ids), 1)
        bodies = {json.dumps(b, sort_keys=True) for _, b in self.receiver.attempts}
        self.assertEqual(len(bodies), 1)
        (row,) = self.rows("SELECT failure_count, retry_interval_ms FROM federation_destinations")
        self.assertGreaterEqual(row[0], 3)
        self.assertEqual(row[1], 800 if row[0] == 3 else 1000)
        # More work arrives while the destination is down: it waits behind the transaction in flight.
        for n in range(3, 60):
            await s.enqueue_pdu([self.b.server_name], pdu(n)["event_id"], pdu(n))
        self.receiver.mode = "ok"
        await self.wait(self.queue_empty, "catch-up")
        self.assertEqual(self.receiver.accepted[0][0], ids.pop())
        self.assertEqual(self.receiver.pdu_ids(), [pdu(n)["event_id"] for n in range(60)])
        self.assertEqual(self.rows("SELECT failure_count FROM federation_destinations"), [(0,)])

    async def test_connection_refused_then_back(self):
        """Connection failures back off too; when the server listens again the queue is delivered."""
        await self.b.stop_listening()
        s = self.sender()
        await s.enqueue_pdu([self.b.server_name], "$a", pdu(1, "$a"))
        await self.wait(lambda: self.rows("SELECT 1 FROM federation_destinations WHERE failure_count >= 2"), "two failures")
        self.b.listen_again()
        await self.wait(self.queue_empty, "delivered")
        self.assertEqual(self.receiver.pdu_ids(), ["$a"])

    async def test_rejected_transaction_dropped(self):
        """A 4xx answer drops that transaction; the queue goes on."""
        self.receiver.mode = "reject"
        s = self.sender()
        await s.enqueue_pdu([self.b.server_name], "$bad", pdu(1, "$bad"))
        await self.wait(self.queue_empty, "dropped")
        self.receiver.mode = "ok"
        await s.enqueue_pdu([self.b.server_name], "$good", pdu(2, "$good"))
        await self.wait(self.queue_empty, "sent")
        self.assertEqual(self.receiver.pdu_ids(), ["$good"])

    async def test_crash_recovery_resends_same_transaction(self):
        """A transaction left in flight by a stopped sender is resent, same ID, by its successor."""
        self.receiver.mode = "fail"
        first = self.sender()
        await first.enqueue_pdu([self.b.server_name], "$a", pdu(1, "$a"))
        await self.wait(lambda: self.receiver.attempts, "one attempt")
        await first.stop()
        txn_id = self.receiver.attempts[0][0]
        self.receiver.mode = "ok"
        await self.a.queue_store.set_destination_retry(self.b.server_name, 0, 0, 0)
        self.sender().start()
        await self.wait(self.queue_empty, "resent")
        self.assertEqual([t for t, _ in self.receiver.accepted], [txn_id])

    async def test_sharding(self):
        """Only the instance owning a destination sends to it; the other leaves the queue alone."""
        from homeserver.federation.sender import destination_owner

        owner = destination_owner(self.b.server_name, ["fs1", "fs2"])
        other = "fs2" if owner == "fs1" else "fs1"
        idle = self.sender(other, ("fs1", "fs2"), poll=0.05)
        idle.start()
        await idle.enqueue_pdu([self.b.server_name], "$a", pdu(1, "$a"))
        d = defer.Deferred()
        reactor.callLater(0.3, d.callback, None)
        await d
        self.assertEqual(self.receiver.attempts, [])
        self.sender(owner, ("fs1", "fs2"), poll=0.05).start()
        await self.wait(self.queue_empty, "sent by the owner")
        self.assertEqual(self.receiver.pdu_ids(), ["$a"])


class DestinationUpTests(SenderTestCase):
    async def test_inbound_request_ends_backoff(self):
        """When a backed-off destination talks to us, its queue is sent without waiting out the backoff."""
        from homeserver.federation.backoff import BackoffPolicy
        from homeserver.federation.destinations import DestinationBackoff

        # A long backoff, so that only destination_is_up can explain a prompt delivery.
        self.a.backoff = DestinationBackoff(reactor, self.a.queue_store, BackoffPolicy(min_interval_ms=600_000, jitter=0.0))
        self.receiver.mode = "fail"
        s = self.sender()
        await s.enqueue_pdu([self.b.server_name], "$a", pdu(1, "$a"))
        await self.wait(lambda: self.rows("SELECT 1 FROM federation_destinations WHERE failure_count = 1"), "one failure")
        self.receiver.mode = "ok"
        s.destination_is_up("unrelated.test")
        s.destination_is_up(self.b.server_name)
        await self.wait(self.queue_empty, "delivered after the destination came back")
        self.assertEqual(self.receiver.pdu_ids(), ["$a"])
        self.assertEqual(self.rows("SELECT failure_count FROM federation_destinations"), [(0,)])


class OtherProcessTests(SenderTestCase):
    async def test_work_queued_elsewhere_found_by_poll(self):
        """Work queued by a process without a sender (no wake hook) is found by the sender's poll."""
        from homeserver.federation.sender import FederationQueue

        self.sender(poll=0.1).start()
        elsewhere = FederationQueue(reactor, self.a.server_name, self.a.queue_store)
        await elsewhere.enqueue_edu(self.b.server_name, {"edu_type": "m.direct_to_device", "content": {}})
        await elsewhere.enqueue_pdu([self.b.server_name], "$p", pdu(1, "$p"))
        await self.wait(self.queue_empty, "sent after a poll")
        self.assertEqual(self.receiver.pdu_ids(), ["$p"])


class CatchUpTests(SenderTestCase):
    async def test_long_outage_sends_newest_per_room(self):
        """After an outage with a backlog past the threshold, the newest PDU of each room is sent."""
        self.receiver.mode = "fail"
        s = FederationSender(reactor, self.a.server_name, "fs1", ["fs1"], self.a.queue_store, self.a.client,
                             self.a.backoff, poll_interval_seconds=60, catch_up_threshold=5)
        self.addCleanup(lambda: defer.ensureDeferred(s.stop()))
        first = dict(pdu(0, "$first"), room_id="!a:x")
        await s.enqueue_pdu([self.b.server_name], "$first", first)
        await self.wait(lambda: self.receiver.attempts, "first attempt")
        for n in range(1, 13):
            room = "!a:x" if n % 2 else "!b:x"
            await s.enqueue_pdu([self.b.server_name], f"$n{n}", dict(pdu(n, f"$n{n}"), room_id=room))
        self.receiver.mode = "ok"
        await self.wait(self.queue_empty, "caught up")
        self.assertEqual(self.receiver.pdu_ids(), ["$first", "$n11", "$n12"])
