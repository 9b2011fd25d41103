"""Concurrent senders in many rooms across every events shard, with long-polling syncers.

Invariant 2 of DESIGN.md: every syncer receives every event of its rooms
exactly once, in room order, although the sends race each other.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from twisted.internet import defer

from homeserver.sharding import shard_for
from tests.integration.rooms.base import RoomsTestCase
from tests.utils.client import wait_for_response
from tests.utils.http import make_request

USERS = ("alice", "bob", "carol")
PER_SENDER_PER_ROOM = 5
ROOMS_PER_SHARD = 2


class ConcurrencyTests(RoomsTestCase):
    """Racing senders and long-polling syncers on a MemoryBus."""
    async def _syncer(self, token: str, since: str, expected: int, seen: dict, deadline: float) -> None:
        flt = json.dumps({"room": {"timeline": {"limit": 1000}}})
        count = 0
        while count < expected and time.monotonic() < deadline:
            query = urlencode({"since": since, "timeout": "2000", "filter": flt})
            resp = await wait_for_response(make_request(self.site, "GET", "/_matrix/client/v3/sync?" + query, access_token=token))
            self.assertEqual(resp.code, 200, resp.body)
            for room_id, room in resp.json["rooms"]["join"].items():
                self.assertFalse(room["timeline"]["limited"])
                for event in room["timeline"]["events"]:
                    if event["type"] == "m.room.message":
                        seen.setdefault(room_id, []).append(event["event_id"])
                        count += 1
            since = resp.json["next_batch"]

    async def test_every_event_exactly_once_in_room_order(self) -> None:
        """Racing senders over every shard; each long-polling syncer sees each message once, in room order."""
        tokens = {u: await self.make_user(u) for u in USERS}
        count = self.shard_counts["events"]
        rooms: list[str] = []
        per_shard = {s: 0 for s in range(count)}
        for _ in range(60):
            if all(n >= ROOMS_PER_SHARD for n in per_shard.values()):
                break
            room_id = await self.create_room(tokens["alice"], preset="public_chat")
            shard = shard_for(room_id, count)
            if per_shard[shard] >= ROOMS_PER_SHARD:
                continue
            per_shard[shard] += 1
            rooms.append(room_id)
        self.assertTrue(all(n >= ROOMS_PER_SHARD for n in per_shard.values()), per_shard)
        for user in USERS[1:]:
            for room_id in rooms:
                self.assertEqual((await self.join(tokens[user], room_id)).code, 200)
        starts = {u: (await self.sync(tokens[u]))["next_batch"] for u in USERS}

        expected = len(USERS) * len(rooms) * PER_SENDER_PER_ROOM
        deadline = time.monotonic() + 60
        seen: dict[str, dict[str, list[str]]] = {u: {} for u in USERS}
        syncers = [defer.ensureDeferred(self._syncer(tokens[u], starts[u], expected, seen[u], deadline)) for u in USERS]

        pending = []
        for i in range(PER_SENDER_PER_ROOM):
            for room_id in rooms:
                for user in USERS:
                    path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{user}-{i}"
                    pending.append(make_request(self.site, "PUT", path, {"msgtype": "m.text", "body": f"{user} {i}"},
                                                access_token=tokens[user]))
        for resp in pending:
            await wait_for_response(resp, timeout=60)
            self.assertEqual(resp.code, 200, resp.body)
        await defer.gatherResults(syncers)

        for room_id in rooms:
            page = await self.get(tokens["alice"], f"/rooms/{room_id}/messages?dir=f&limit=1000")
            order = [e["event_id"] for e in page.json["chunk"] if e["type"] == "m.room.message"]
            self.assertEqual(len(order), len(USERS) * PER_SENDER_PER_ROOM)
            for user in USERS:
                self.assertEqual(seen[user].get(room_id), order, (user, room_id))
            # The room never forked: one forward extremity, each event on top of the previous one.
            snapshot = await self.rooms_api.store.get_room_snapshot(room_id)
            self.assertEqual(len(snapshot.extremities), 1)
            rows, _ = await self.rooms_api.store.paginate(room_id, 0, 0, False, 1000)
            self.assertEqual([r.depth for r in rows], list(range(1, len(rows) + 1)))
            pdus = [r.pdu() for r in rows]
            for prev, pdu in zip(rows, pdus[1:]):
                self.assertEqual(pdu["prev_events"], [prev.event_id])


class RedisConcurrencyTests(ConcurrencyTests):
    """The same over real Redis, writer and syncer on separate bus connections."""

    use_redis = True
