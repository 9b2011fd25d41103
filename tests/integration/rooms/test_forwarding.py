"""Two writer instances sharing the database and the bus: writes reach the shard owner (DESIGN.md §4)."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import reactor, task

from homeserver.sharding import shard_for
from tests.integration.rooms.base import RoomsTestCase
from tests.utils.client import wait_for_response
from tests.utils.http import make_request

V3 = "/_matrix/client/v3"


class ForwardingTests(RoomsTestCase):
    """Instance A (this test case's site) owns the lower half of every stream, B the upper half."""

    def owned_by_a(self, stream: str) -> frozenset:
        """The shards instance A owns."""
        n = self.shard_counts[stream]
        return frozenset(range(n // 2 if n > 1 else 1))

    async def extra_setup(self) -> None:
        """Build instance B and rebuild A with half of the shards."""
        from homeserver.http.server import JsonResource, make_site
        from workers.rooms import (
            build_ephemeral_api,
            build_room_api,
            make_http_forwarder,
            register_ephemeral_api,
            register_room_api,
        )

        counts = self.shard_counts
        owned_b = {s: frozenset(range(n)) - self.owned_by_a(s) for s, n in counts.items()}
        self.b_rooms = await build_room_api(self.clock, self.server_name, self.db, self.bus, self.signing_key, counts,
                                            owned_b["events"])
        b_ephemeral = await build_ephemeral_api(self.clock, self.db, self.bus, counts, owned_b,
                                                self.b_rooms.store, self.api.account_data_store)
        self.b_resource = JsonResource(self.clock)
        register_room_api(self.b_resource, self.b_rooms, self.api.authenticator)
        register_ephemeral_api(self.b_resource, b_ephemeral, self.api.authenticator)
        b_site = make_site(self.b_resource, reactor)
        b_site.timeOut = None
        self.b_site = b_site
        port = reactor.listenTCP(0, b_site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"

        # Rebuild A's surface with only A's shards and a forwarder to B.
        a_rooms = await build_room_api(self.clock, self.server_name, self.db, self.bus, self.signing_key, counts,
                                       self.owned_by_a("events"))
        a_owned = {s: self.owned_by_a(s) for s in counts}
        a_ephemeral = await build_ephemeral_api(self.clock, self.db, self.bus, counts, a_owned, a_rooms.store,
                                                self.api.account_data_store)
        forward = make_http_forwarder(reactor, lambda stream, shard: base)
        from homeserver.rest.client import register_account_api

        self.resource = JsonResource(self.clock)
        register_account_api(self.resource, self.api)
        register_room_api(self.resource, a_rooms, self.api.authenticator, forward=forward)
        register_ephemeral_api(self.resource, a_ephemeral, self.api.authenticator, forward=forward)
        self.site = make_site(self.resource, task.Clock())
        self.a_rooms = a_rooms

    async def on_b(self, method: str, path: str, body, token: str):
        """A request to instance B."""
        return await wait_for_response(make_request(self.b_site, method, path, body, access_token=token))

    async def test_writes_are_forwarded_to_the_owner(self) -> None:
        """Sends, joins and typing for B's shards, made on A, are carried out by B."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        # Rooms created on A live on A's shards; on B, on B's.
        room_a = await self.create_room(alice, preset="public_chat")
        self.assertIn(shard_for(room_a, self.shard_counts["events"]), self.owned_by_a("events"))
        resp = await self.on_b("POST", V3 + "/createRoom", {"preset": "public_chat", "room_alias_name": "bee"}, alice)
        self.assertEqual(resp.code, 200, resp.body)
        room_b = resp.json["room_id"]
        self.assertNotIn(shard_for(room_b, self.shard_counts["events"]), self.owned_by_a("events"))

        sent = await self.send(alice, room_b, {"msgtype": "m.text", "body": "via A"}, "f1")
        self.assertEqual(sent.code, 200, sent.body)
        again = await self.send(alice, room_b, {"msgtype": "m.text", "body": "via A"}, "f1")
        self.assertEqual(again.json["event_id"], sent.json["event_id"])
        joined = await self.join(bob, quote("#bee:test.local"))
        self.assertEqual((joined.code, joined.json.get("room_id")), (200, room_b))
        page = await self.get(bob, f"/rooms/{room_b}/messages?dir=b&limit=5")
        self.assertIn("via A", [e["content"].get("body") for e in page.json["chunk"]])

        # Typing for whichever room's typing shard B owns goes to B.
        typing_b = next(r for r in (room_a, room_b)
                        if shard_for(r, self.shard_counts["typing"]) not in self.owned_by_a("typing"))
        if typing_b == room_a:
            await self.join(bob, room_a)
        resp = await self.request("PUT", V3 + f"/rooms/{typing_b}/typing/{quote(self.uid('bob'))}",
                                  {"typing": True, "timeout": 10000}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        # A request that was already forwarded once is not forwarded again.
        resp = await self.request("PUT", V3 + f"/rooms/{room_b}/send/m.room.message/f2", {"body": "x"},
                                  token=alice, headers={"X-Estuary-Forwarded": "1"})
        self.assertEqual(resp.code, 503)
        # Refusals by the owner come back unchanged (carol is not in the room: B says so).
        carol = await self.make_user("carol")
        resp = await self.request("PUT", V3 + f"/rooms/{typing_b}/typing/{quote(self.uid('carol'))}",
                                  {"typing": True}, token=carol)
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertIn("joined", resp.json["error"])
