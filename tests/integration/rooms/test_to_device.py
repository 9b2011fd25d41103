"""Send-to-device messaging against a real database: PUT /sendToDevice and /sync's ``to_device``."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer

from tests.integration.rooms.base import RoomsTestCase

V3 = "/_matrix/client/v3"


class ToDeviceTests(RoomsTestCase):
    """Delivery, acknowledgement, idempotency and refusals."""

    async def extra_setup(self) -> None:
        """Mount sendToDevice (as RoomsProcess.mount does) and make alice (one device) and bob (two devices)."""
        from workers.rooms import register_to_device_api

        register_to_device_api(self.resource, self.ephemeral_api, self.api.authenticator)
        self.alice = await self.make_user("alice")
        bob = await self.register_user("bob")
        self.bob, self.bob_device = bob["access_token"], bob["device_id"]
        second = await self.login("bob")
        self.bob2, self.bob2_device = second["access_token"], second["device_id"]

    async def _send(self, token: str, txn: str, messages: Any, etype: str = "m.test.ping") -> Any:
        return await self.request("PUT", f"{V3}/sendToDevice/{etype}/{txn}", {"messages": messages}, token=token)

    async def _sync_until(self, token: str, since: str, count: int) -> dict:
        """Sync (short long-polls) until ``count`` to-device events arrive or a deadline passes."""
        deadline = time.monotonic() + 10
        while True:
            body = await self.sync(token, since, timeout=200)
            if len(body["to_device"]["events"]) >= count or time.monotonic() > deadline:
                return body

    async def test_send_to_one_device_delivered_once_and_deleted_on_ack(self) -> None:
        """A message to one device reaches only that device, once; the next sync's since deletes it;
        repeating the older since (no ack) redelivers it."""
        start_b1 = (await self.sync(self.bob))["next_batch"]
        start_b2 = (await self.sync(self.bob2))["next_batch"]
        resp = await self._send(self.alice, "t1", {self.uid("bob"): {self.bob_device: {"n": 1}}})
        self.assertEqual(resp.code, 200, resp.body)
        body = await self._sync_until(self.bob, start_b1, 1)
        self.assertEqual(body["to_device"]["events"],
                         [{"sender": self.uid("alice"), "type": "m.test.ping", "content": {"n": 1}}])
        # Not acknowledged yet: the same since gives it again.
        again = await self.sync(self.bob, start_b1)
        self.assertEqual(len(again["to_device"]["events"]), 1)
        # Acknowledged by syncing from the token that delivered it: gone, and deleted from storage.
        after = await self.sync(self.bob, body["next_batch"])
        self.assertEqual(after["to_device"]["events"], [])
        self.assertEqual(await self.count("device_inbox"), 0)
        self.assertEqual((await self.sync(self.bob2, start_b2))["to_device"]["events"], [])

    async def test_star_fans_out_to_every_device(self) -> None:
        """``*`` delivers to each of the recipient's devices; a long-polling sync is woken by it."""
        start_b1 = (await self.sync(self.bob))["next_batch"]
        start_b2 = (await self.sync(self.bob2))["next_batch"]
        poll = defer.ensureDeferred(self.sync(self.bob, start_b1, timeout=5000))
        self.assertFalse(poll.called)
        resp = await self._send(self.alice, "t2", {self.uid("bob"): {"*": {"all": True}}})
        self.assertEqual(resp.code, 200, resp.body)
        started = time.monotonic()
        woken = await poll
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual([e["content"] for e in woken["to_device"]["events"]], [{"all": True}])
        second = await self._sync_until(self.bob2, start_b2, 1)
        self.assertEqual([e["content"] for e in second["to_device"]["events"]], [{"all": True}])

    async def test_retried_transaction_is_not_delivered_twice(self) -> None:
        """The same txnId from the same device is delivered once, even after the first was acknowledged."""
        start = (await self.sync(self.bob))["next_batch"]
        messages = {self.uid("bob"): {self.bob_device: {"once": 1}}}
        self.assertEqual((await self._send(self.alice, "same", messages)).code, 200)
        self.assertEqual((await self._send(self.alice, "same", messages)).code, 200)
        body = await self._sync_until(self.bob, start, 1)
        self.assertEqual(len(body["to_device"]["events"]), 1)
        acked = await self.sync(self.bob, body["next_batch"])
        self.assertEqual((await self._send(self.alice, "same", messages)).code, 200)
        later = await self.sync(self.bob, acked["next_batch"], timeout=300)
        self.assertEqual(later["to_device"]["events"], [])
        # A new transaction ID is a new message.
        self.assertEqual((await self._send(self.alice, "other", messages)).code, 200)
        fresh = await self._sync_until(self.bob, acked["next_batch"], 1)
        self.assertEqual([e["content"] for e in fresh["to_device"]["events"]], [{"once": 1}])

    async def test_transaction_ids_forgotten_after_retention(self) -> None:
        """A sender device's remembered transaction IDs are dropped once older than the retention period."""
        from storage.stores.device_inbox import TXN_RETENTION_MS

        messages = {self.uid("bob"): {self.bob_device: {}}}
        self.assertEqual((await self._send(self.alice, "old", messages)).code, 200)
        self.assertEqual(await self.count("device_inbox_txns"), 1)
        self.clock.advance(TXN_RETENTION_MS / 1000 + 1)
        self.assertEqual((await self._send(self.alice, "new", messages)).code, 200)
        self.assertEqual(await self.count("device_inbox_txns"), 1)
        self.assertEqual(await self.count("device_inbox"), 2)

    async def test_unknown_devices_and_remote_users_are_skipped(self) -> None:
        """Messages to an unknown device or a remote user store nothing and still succeed."""
        resp = await self._send(self.alice, "t3", {self.uid("bob"): {"NOPE": {}}, "@carol:elsewhere.example": {"*": {}}})
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(await self.count("device_inbox"), 0)

    async def test_refusals(self) -> None:
        """Bodies of the wrong shape are M_BAD_JSON; a bad event type or user ID is M_INVALID_PARAM."""
        cases = [
            ({"messages": "x"}, "m.test", "M_BAD_JSON"),
            ({}, "m.test", "M_BAD_JSON"),
            ({"messages": {self.uid("bob"): []}}, "m.test", "M_BAD_JSON"),
            ({"messages": {self.uid("bob"): {self.bob_device: "text"}}}, "m.test", "M_BAD_JSON"),
            ({"messages": {"bob": {"*": {}}}}, "m.test", "M_INVALID_PARAM"),
            ({"messages": {}}, "bad%20type", "M_INVALID_PARAM"),
        ]
        for body, etype, code in cases:
            resp = await self.request("PUT", f"{V3}/sendToDevice/{etype}/r1", body, token=self.alice)
            self.assertEqual((resp.code, resp.json.get("errcode")), (400, code), (body, etype, resp.body))
        resp = await self.request("PUT", f"{V3}/sendToDevice/m.test/r2", [1, 2], token=self.alice)
        self.assertEqual(resp.code, 400, resp.body)
        self.assertEqual(await self.count("device_inbox"), 0)

    async def test_old_token_without_to_device_section(self) -> None:
        """A since token from before the to_device section reads as position 0 (all messages pending)."""
        from homeserver.handlers.rooms.tokens import StreamToken

        start = (await self.sync(self.bob))["next_batch"]
        self.assertEqual((await self._send(self.alice, "t4", {self.uid("bob"): {"*": {"v": 4}}})).code, 200)
        await self._sync_until(self.bob, start, 1)
        token = StreamToken.decode(start, self.shard_counts)
        old = "_".join(start.split("_")[:6])  # drop the d section
        self.assertEqual(StreamToken.decode(old, self.shard_counts).to_device, (0,) * len(token.to_device))
        body = await self.sync(self.bob, old)
        self.assertEqual([e["content"] for e in body["to_device"]["events"]], [{"v": 4}])
