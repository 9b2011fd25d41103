"""Account data in a multi-process stack: written by the owner of the user's shard, seen everywhere.

Two client writers own disjoint halves of every stream. A read marker is
sent for a room whose events shard is on one writer by a user whose
``account_data`` shard is on the other: the room's owner forwards the
account data write to the user's owner, which publishes it on the bus,
and the user's long-poll on the sync worker wakes with it. A global
account data write through the router does the same.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, Optional

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

from homeserver.sharding import shard_for
from tests.e2e.stack import Stack

SHARDS = {"events": 8, "receipts": 2, "typing": 2, "presence": 2, "to_device": 2, "account_data": 4,
          "device_lists": 2, "push_rules": 2}


def _half(first: bool) -> dict[str, str]:
    return {s: (f"0-{n // 2 - 1}" if first else f"{n // 2}-{n - 1}") for s, n in SHARDS.items()}


LAYOUT = {
    "writer1": {"roles": ["client_writer", "background"], "shards": _half(True)},
    "writer2": {"roles": ["client_writer"], "shards": _half(False)},
    "sync": {"roles": ["sync"]},
    "reader": {"roles": ["client_reader", "federation_inbound", "federation_sender", "media", "pusher", "admin"]},
}


def _on_first_writer(stream: str, key: str) -> bool:
    return shard_for(key, SHARDS[stream]) < SHARDS[stream] // 2


class AccountDataOwnerTests(unittest.TestCase):
    timeout = 180

    async def call(self, method: str, path: str, token: Optional[str] = None, body: Any = None,
                   timeout: float = 10) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        d = treq.request(method, self.stack.base + path, headers=headers,
                         data=json.dumps(body).encode() if body is not None else None, persistent=False)
        d.addTimeout(timeout, reactor)
        resp = await d
        return resp.code, await treq.json_content(resp)

    async def sync_until(self, token: str, since: str, found: Any) -> float:
        """Long-poll until ``found(response)``; returns the seconds the successful long-poll took."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = time.monotonic()
            code, data = await self.call("GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(
                {"since": since, "timeout": "25000"}), token, timeout=40)
            self.assertEqual(code, 200, data)
            if found(data):
                return time.monotonic() - started
            since = data["next_batch"]
        self.fail("account data never reached /sync")

    @defer.inlineCallbacks
    def test_read_marker_and_account_data_across_writers(self):
        self.stack = Stack(self, reactor, LAYOUT, extra_config={"streams": dict(SHARDS), "rate_limits": {"enabled": False}})
        try:
            yield self.stack.start()
        except Exception:
            self.fail("stack did not become ready:\n" + self.stack.log()[-4000:])
        try:
            yield defer.ensureDeferred(self._scenario())
        except BaseException:
            print("---- stack log (tail) ----\n" + self.stack.log()[-6000:])
            raise

    async def _scenario(self) -> None:
        code, data = await self.call("POST", "/_matrix/client/v3/register", body={
            "username": "marker", "password": "marker password 1", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, data)
        user_id, token = data["user_id"], data["access_token"]
        user_first = _on_first_writer("account_data", user_id)
        room_id = None
        for _ in range(30):
            code, data = await self.call("POST", "/_matrix/client/v3/createRoom", token, {"preset": "private_chat"})
            self.assertEqual(code, 200, data)
            if _on_first_writer("events", data["room_id"]) != user_first:
                room_id = data["room_id"]
                break
        self.assertIsNotNone(room_id, "a room on the other writer than the user's account data")
        q = urllib.parse.quote(room_id)
        code, data = await self.call("PUT", f"/_matrix/client/v3/rooms/{q}/send/m.room.message/m1", token,
                                     {"msgtype": "m.text", "body": "mark me"})
        self.assertEqual(code, 200, data)
        event_id = data["event_id"]
        code, data = await self.call("GET", "/_matrix/client/v3/sync?timeout=0", token)
        since = data["next_batch"]

        def has_marker(resp: dict) -> bool:
            room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
            return any(e["type"] == "m.fully_read" and e["content"].get("event_id") == event_id
                       for e in room.get("account_data", {}).get("events", []))

        poll = defer.ensureDeferred(self.sync_until(token, since, has_marker))
        code, data = await self.call("POST", f"/_matrix/client/v3/rooms/{q}/read_markers", token,
                                     {"m.fully_read": event_id})
        self.assertEqual(code, 200, data)
        took = await poll
        self.assertLess(took, 20, "the long-poll was woken by the write, not by its timeout")

        code, data = await self.call("GET", "/_matrix/client/v3/sync?timeout=0", token)
        since = data["next_batch"]
        path = f"/_matrix/client/v3/user/{urllib.parse.quote(user_id)}/account_data/org.example.test"

        def has_global(resp: dict) -> bool:
            return any(e["type"] == "org.example.test" and e["content"] == {"n": 2}
                       for e in resp.get("account_data", {}).get("events", []))

        poll = defer.ensureDeferred(self.sync_until(token, since, has_global))
        for n in (1, 2):
            code, data = await self.call("PUT", path, token, {"n": n})
            self.assertEqual(code, 200, data)
        took = await poll
        self.assertLess(took, 20)
        code, data = await self.call("GET", f"/_matrix/client/v3/user/{urllib.parse.quote(user_id)}/rooms/{q}/account_data/m.fully_read", token)
        self.assertEqual((code, data), (200, {"event_id": event_id}))
