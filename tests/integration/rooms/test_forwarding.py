"""Two writer instances sharing the database and the bus: writes run on the shard owner (DESIGN.md §4).

Instance A (this test case's site) owns the lower half of every stream, B
the upper half. A forwards commands for B's shards over the real
replication API (``CommandDispatcher`` + ``HttpReplicationClient`` to B's
replication listener on a TCP port).
"""

from __future__ import annotations

from urllib.parse import quote

import attrs
from twisted.internet import reactor, task

from homeserver.sharding import shard_for
from tests.integration.rooms.base import RoomsTestCase
from tests.utils.client import wait_for_response
from tests.utils.http import make_request

V3 = "/_matrix/client/v3"
SECRET = "s" * 32


@attrs.frozen
class Instance:
    """The parts of an InstanceConfig the dispatcher reads."""

    name: str
    replication_base: str


class ShardMap:
    """A owns the lower half of each stream's shards, B the rest."""

    def __init__(self, counts: dict, owned_by_a) -> None:
        self.stream_shards = counts
        self._owned_by_a = owned_by_a
        self.a = Instance("a", "http://127.0.0.1:9")
        self.b = Instance("b", "http://127.0.0.1:9")

    def shard_owner(self, stream: str, shard: int) -> Instance:
        """The owning instance."""
        return self.a if shard in self._owned_by_a(stream) else self.b


class ForwardingTests(RoomsTestCase):
    """Writes made on A for B's shards are carried out by B."""

    def owned_by_a(self, stream: str) -> frozenset:
        """The shards instance A owns."""
        n = self.shard_counts[stream]
        return frozenset(range(n // 2 if n > 1 else 1))

    async def extra_setup(self) -> None:
        """Build instance B (with its replication listener) and rebuild A with half of the shards."""
        from homeserver.http.server import JsonResource, make_site
        from homeserver.replication import CommandDispatcher
        from homeserver.rest.client import register_account_api
        from workers.replication import HttpReplicationClient, mount_replication_server
        from workers.rooms import (
            build_ephemeral_api,
            build_room_api,
            build_room_commands,
            register_ephemeral_api,
            register_room_api,
        )

        counts = self.shard_counts
        self.map = ShardMap(counts, self.owned_by_a)
        client = self.client = HttpReplicationClient(reactor, SECRET, timeout=5.0, attempts=2, base_delay=0.01)
        self.addCleanup(client.close)

        owned_b = {s: frozenset(range(n)) - self.owned_by_a(s) for s, n in counts.items()}
        b_rooms = await build_room_api(self.clock, self.server_name, self.db, self.bus, self.signing_key, counts,
                                       owned_b["events"])
        b_ephemeral = await build_ephemeral_api(self.clock, self.db, self.bus, counts, owned_b, b_rooms.store,
                                                self.api.account_data_store)
        b_dispatcher = CommandDispatcher(self.map, "b", client)
        b_commands = build_room_commands(b_dispatcher, b_rooms, b_ephemeral)
        replication = JsonResource(self.clock, cors=False)
        mount_replication_server(replication, b_dispatcher, SECRET)
        site = make_site(replication, reactor)
        site.timeOut = None
        self.b_port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.b_port.stopListening)
        self.map.b = Instance("b", f"http://127.0.0.1:{self.b_port.getHost().port}")
        # B's client surface, for creating rooms on B's shards.
        b_client = JsonResource(self.clock)
        register_room_api(b_client, b_rooms, b_commands, self.api.authenticator)
        self.b_site = make_site(b_client, task.Clock())

        a_owned = {s: self.owned_by_a(s) for s in counts}
        a_rooms = await build_room_api(self.clock, self.server_name, self.db, self.bus, self.signing_key, counts,
                                       a_owned["events"])
        a_ephemeral = await build_ephemeral_api(self.clock, self.db, self.bus, counts, a_owned, a_rooms.store,
                                                self.api.account_data_store)
        a_commands = build_room_commands(CommandDispatcher(self.map, "a", client), a_rooms, a_ephemeral)
        self.a_ephemeral, self.b_ephemeral = a_ephemeral, b_ephemeral
        self.resource = JsonResource(self.clock)
        register_account_api(self.resource, self.api)
        register_room_api(self.resource, a_rooms, a_commands, self.api.authenticator)
        register_ephemeral_api(self.resource, a_commands, self.api.authenticator)
        self.site = make_site(self.resource, task.Clock())

    async def on_b(self, method: str, path: str, body, token: str):
        """A client request to instance B."""
        return await wait_for_response(make_request(self.b_site, method, path, body, access_token=token))

    async def test_writes_are_forwarded_to_the_owner(self) -> None:
        """Sends, joins by alias and typing for B's shards, made on A, are carried out by B."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
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

        typing_b = next(r for r in (room_a, room_b)
                        if shard_for(r, self.shard_counts["typing"]) not in self.owned_by_a("typing"))
        if typing_b == room_a:
            await self.join(bob, room_a)
        resp = await self.request("PUT", V3 + f"/rooms/{typing_b}/typing/{quote(self.uid('bob'))}",
                                  {"typing": True, "timeout": 10000}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        # Refusals by the owner come back unchanged (carol is not in the room: B says so).
        carol = await self.make_user("carol")
        resp = await self.request("PUT", V3 + f"/rooms/{typing_b}/typing/{quote(self.uid('carol'))}",
                                  {"typing": True}, token=carol)
        self.assertError(resp, 403, "M_FORBIDDEN")
        self.assertIn("joined", resp.json["error"])

        # With B gone, writes for its shards fail cleanly; A's own rooms still work.
        await self.b_port.stopListening()
        await self.client.close()  # drop pooled connections to B
        resp = await self.send(alice, room_b, {"msgtype": "m.text", "body": "lost"}, "f2")
        self.assertEqual(resp.code, 503, resp.body)
        resp = await self.send(alice, room_a, {"msgtype": "m.text", "body": "fine"}, "f3")
        self.assertEqual(resp.code, 200, resp.body)
