"""Durability of federation on one server (A), driven over its real endpoints.

Inbound: ``PUT /send`` stages PDUs before processing them; a retried
transaction is answered from the stored result; PDUs staged by an
instance that died before processing them are processed by the sweep (or
by the sender's retry); a writer that cannot be reached leaves its PDU
staged. Outbound: a local event is queued for the other servers in the
transaction that persists it, so it is sent even when nothing runs after
the commit.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, reactor

from homeserver.federation.backoff import BackoffPolicy
from homeserver.federation.destinations import DestinationBackoff
from homeserver.federation.rooms import RECEIVE_PDU
from homeserver.federation.sender import FederationSender
from tests.integration.federation.test_rooms import B, FederationRoomsTestCase
from tests.utils.wait import wait_until


class _RecordingClient:
    """A's outbound client for the sender: records each transaction and accepts it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    async def put_json(self, destination: str, path: str, data: Any, **kw: Any) -> Any:
        self.sent.append((destination, path, data))
        return {"pdus": {p.get("event_id", ""): {} for p in data.get("pdus", [])}}


class DurabilityTestCase(FederationRoomsTestCase):
    async def extra_setup(self) -> None:
        await super().extra_setup()
        self.processed: list[str] = []
        inner = self.fed.inbound._process

        async def counting(origin: str, room_id: str, pdu_json: str) -> dict[str, Any]:
            self.processed.append(json.loads(pdu_json)["content"].get("body"))
            return await inner(origin, room_id, pdu_json)

        self.fed.inbound._process = counting
        self.addCleanup(lambda: defer.ensureDeferred(self.fed.inbound.stop()))

    async def joined_message(self, body: str, prev: list[str] = (), depth: int = 10) -> tuple[dict[str, Any], dict[str, Any]]:
        if not hasattr(self, "room"):
            self.room = await self.setup_joined_room()
        room = self.room
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        return room, self.message(room["room_id"], f"@bob:{B}", list(prev) or [room["join_id"]], auth, depth, body)

    async def rows(self, sql: str, args: Any = ()) -> list[tuple]:
        def txn_fn(txn: Any) -> list[tuple]:
            txn.execute(sql, args)
            return txn.fetchall()

        return await self.db.run_interaction("test_rows", txn_fn)


class InboundTests(DurabilityTestCase):
    async def test_pdus_are_processed_in_order_and_unstaged(self) -> None:
        """A transaction's PDUs of one room are processed in order (the second builds on the first); nothing stays staged."""
        room, first = await self.joined_message("first")
        _, second = await self.joined_message("second", prev=[self.event_id(first)], depth=11)
        resp = await self.send_txn([first, second], txn="ordered")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["pdus"], {self.event_id(first): {}, self.event_id(second): {}})
        self.assertEqual(self.processed, ["first", "second"])
        self.assertEqual(await self.timeline_bodies(room["room_id"]), ["second", "first"])
        self.assertFalse([p for p in self.network.requests if "get_missing_events" in p[1]])
        self.assertEqual(await self.rows("SELECT * FROM federation_inbound_staging"), [])

    async def test_retried_transaction_is_answered_without_rework(self) -> None:
        """The same transaction ID from the same origin gets the stored answer and processes nothing again."""
        room, msg = await self.joined_message("once")
        _, forged = await self.joined_message("forged", depth=11)
        forged["signatures"] = {B: {k: "A" * 86 for k in forged["signatures"][B]}}
        first = await self.send_txn([msg, forged], txn="dup")
        self.assertEqual(first.json["pdus"][self.event_id(msg)], {})
        self.assertIn("error", first.json["pdus"][self.event_id(forged)])
        self.assertEqual(self.processed, ["once", "forged"])
        again = await self.send_txn([msg, forged], txn="dup")
        self.assertEqual(again.code, 200)
        self.assertEqual(again.json, first.json)
        self.assertEqual(self.processed, ["once", "forged"])
        self.assertEqual((await self.timeline_bodies(room["room_id"])).count("once"), 1)

    async def test_concurrent_duplicates_process_once(self) -> None:
        """The same transaction sent twice at once (a sender retrying after a timeout) is staged and processed once."""
        room, msg = await self.joined_message("twice at once")
        first, second = await defer.gatherResults([
            defer.ensureDeferred(self.send_txn([msg], txn="concurrent")),
            defer.ensureDeferred(self.send_txn([msg], txn="concurrent")),
        ])
        for resp in (first, second):
            self.assertEqual(resp.code, 200, resp.body)
            self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertEqual(self.processed, ["twice at once"])
        self.assertEqual((await self.timeline_bodies(room["room_id"])).count("twice at once"), 1)

    async def test_pdus_staged_before_a_crash_are_processed_by_the_sweep(self) -> None:
        """An instance staged a transaction and died: the sweep processes it once; the sender's retry is not reprocessed."""
        room, msg = await self.joined_message("survived")
        outcome = await self.fed.inbound_store.stage_transaction(
            B, "crashed", [(room["room_id"], self.event_id(msg), json.dumps(msg))], self.now_ms()
        )
        self.assertEqual(outcome.status, "new")
        self.assertNotIn("survived", await self.timeline_bodies(room["room_id"]))
        await self.fed.inbound.sweep()
        await self.fed.inbound.when_idle(room["room_id"])
        self.assertIn("survived", await self.timeline_bodies(room["room_id"]))
        self.assertEqual(await self.rows("SELECT * FROM federation_inbound_staging"), [])
        # The remote never got an answer and retries: nothing runs twice.
        resp = await self.send_txn([msg], txn="crashed")
        self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertEqual(self.processed, ["survived"])
        self.assertEqual((await self.timeline_bodies(room["room_id"])).count("survived"), 1)

    async def test_retry_of_an_unanswered_transaction_processes_its_staged_pdus(self) -> None:
        """Staged, never answered (crash), then retried by the origin before any sweep: processed with results."""
        room, msg = await self.joined_message("retried")
        await self.fed.inbound_store.stage_transaction(
            B, "unanswered", [(room["room_id"], self.event_id(msg), json.dumps(msg))], self.now_ms()
        )
        resp = await self.send_txn([msg], txn="unanswered")
        self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertEqual(self.processed, ["retried"])
        self.assertIn("retried", await self.timeline_bodies(room["room_id"]))
        stored = await self.rows("SELECT response_json FROM federation_inbound_transactions WHERE txn_id = 'unanswered'")
        self.assertEqual(json.loads(stored[0][0]), resp.json)

    async def test_unreachable_writer_leaves_the_pdu_staged(self) -> None:
        """When the room's events writer cannot be reached the PDU stays staged and is processed on a later sweep."""
        room, msg = await self.joined_message("later")
        dispatcher = self.fed._dispatcher
        real_run = dispatcher.run
        down = [True]

        async def run(command: str, key: str, args: Any) -> Any:
            if command == RECEIVE_PDU and down[0]:
                raise ConnectionRefusedError("writer down")
            return await real_run(command, key, args)

        dispatcher.run = run
        resp = await self.send_txn([msg], txn="down")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertEqual(await self.rows("SELECT event_id, attempts FROM federation_inbound_staging"),
                         [(self.event_id(msg), 1)])
        self.assertNotIn("later", await self.timeline_bodies(room["room_id"]))
        down[0] = False
        await self.fed.inbound.sweep()
        await self.fed.inbound.when_idle(room["room_id"])
        self.assertIn("later", await self.timeline_bodies(room["room_id"]))
        self.assertEqual(await self.rows("SELECT * FROM federation_inbound_staging"), [])

    async def test_unknown_room_and_bad_pdus_are_not_staged(self) -> None:
        """PDUs of rooms A does not know, or that do not parse, are dropped at receipt (no result, nothing staged)."""
        room, msg = await self.joined_message("fine")
        stranger = dict(msg, room_id="!nowhere:b.test")
        resp = await self.send_txn([stranger, {"room_id": room["room_id"], "type": 5}, "junk"], txn="bad")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"pdus": {}})
        self.assertEqual(await self.rows("SELECT * FROM federation_inbound_staging"), [])


class OutboundTests(DurabilityTestCase):
    async def test_local_event_is_queued_in_its_own_transaction(self) -> None:
        """With the post-commit hook never run (a crash right after commit), the event is queued and the sender delivers it."""
        room = await self.setup_joined_room()
        creator = self.rooms_api.creator
        creator.observers.remove(self.fed.on_local_event)
        sent = await self.send(self.alice, room["room_id"], {"msgtype": "m.text", "body": "after commit"}, "crash1")
        self.assertEqual(sent.code, 200, sent.body)
        event_id = sent.json["event_id"]
        self.assertIn(event_id, await self.outbox(B))

        client = _RecordingClient()
        backoff = DestinationBackoff(self.clock, self.queue_store, BackoffPolicy())
        sender = FederationSender(self.clock, self.server_name, "fs1", ["fs1"], self.queue_store, client, backoff)
        self.addCleanup(lambda: defer.ensureDeferred(sender.stop()))
        sender.start()  # a fresh sender process: its first poll finds the queued rows

        def delivered() -> bool:
            return any(p.get("content", {}).get("body") == "after commit"
                       for dest, _, body in client.sent if dest == B for p in body["pdus"])

        await wait_until(reactor, delivered, timeout=15, what="the PDU to be sent to B")

        async def drained() -> bool:
            return event_id not in await self.outbox(B)

        await wait_until(reactor, drained, timeout=15, what="the outbox to drain")

    async def test_event_and_queue_rows_commit_together(self) -> None:
        """If the persist transaction fails after queuing, neither the event nor its queue rows exist."""
        import storage.stores.events as events_store

        room = await self.setup_joined_room()
        real = events_store.enqueue_room_pdu_txn

        def failing(txn: Any, room_id: str, event_id: str, outbound: Any) -> Any:
            real(txn, room_id, event_id, outbound)
            raise RuntimeError("crash inside the transaction")

        events_store.enqueue_room_pdu_txn = failing
        self.addCleanup(setattr, events_store, "enqueue_room_pdu_txn", real)
        before = await self.outbox(B)
        resp = await self.send(self.alice, room["room_id"], {"msgtype": "m.text", "body": "never"}, "boom")
        self.assertNotEqual(resp.code, 200)
        self.assertEqual(await self.outbox(B), before)
        self.assertNotIn("never", await self.timeline_bodies(room["room_id"]))
        events_store.enqueue_room_pdu_txn = real
        resp = await self.send(self.alice, room["room_id"], {"msgtype": "m.text", "body": "now"}, "ok")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertIn(resp.json["event_id"], await self.outbox(B))

    async def test_kick_reaches_the_target_server(self) -> None:
        """A kick of the last member of a server is queued for that server (no longer joined after the event)."""
        room = await self.setup_joined_room()
        resp = await self.post(self.alice, f"/rooms/{quote(room['room_id'])}/kick", {"user_id": f"@bob:{B}"})
        self.assertEqual(resp.code, 200, resp.body)
        rows = await self.rows("SELECT payload FROM federation_outbox WHERE destination = %s AND kind = 'pdu'", (B,))
        kicks = [json.loads(p) for (p,) in rows if json.loads(p).get("state_key") == f"@bob:{B}"
                 and json.loads(p)["content"].get("membership") == "leave"]
        self.assertEqual(len(kicks), 1)
        self.assertNotIn("unsigned", kicks[0])
        self.assertEqual(await self.rows("SELECT 1 FROM federation_outbox WHERE destination = %s", (self.server_name,)), [])

    async def test_relayed_join_is_queued_with_the_event(self) -> None:
        """A join received by send_join is queued for the room's other servers (not its origin) in its transaction."""
        room = await self.setup_joined_room()
        self.rooms_api.creator.observers.remove(self.fed.on_local_event)
        carol = await self.remote_join(room["room_id"], "@carol:c.test", origin="c.test")
        self.assertIn(carol["join_id"], await self.outbox(B))
        self.assertNotIn(carol["join_id"], await self.outbox("c.test"))
