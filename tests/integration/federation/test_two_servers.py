"""Two Estuary homeservers federating over TLS on loopback, each with its own database.

Each server has the accounts, rooms and sync APIs (driven in memory, as a
client would) and its federation endpoints, key server and transaction
sender on a real TLS port; servers find each other through a fake DNS
(``a.test``/``b.test`` -> 127.0.0.1) and trust the test certificate.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer, reactor, ssl, task
from twisted.trial import unittest

from tests.utils.federation import FakeDns, NoWellKnown, shared_tls
from tests.utils.client import wait_for_response
from tests.utils.http import make_request
from tests.utils.services import create_test_database
from tests.utils.wait import wait_until

SHARDS = {"events": 2, "receipts": 1, "typing": 1, "presence": 1, "to_device": 1, "account_data": 1,
          "device_lists": 1, "push_rules": 1}


class _Owner:
    name = "main"


class _ShardMap:
    stream_shards = SHARDS

    def shard_owner(self, stream: str, shard: int) -> Any:
        return _Owner()


class Homeserver:
    """One whole server: client API in memory, federation over TLS."""

    async def start(self, testcase: unittest.TestCase, host: str) -> "Homeserver":
        from bus import MemoryBus
        from bus.ratelimit import MemoryRateLimiter
        from homeserver.config.accounts import AccountsConfig, PasswordPolicyConfig, RateLimitsConfig, RegistrationConfig, SessionsConfig
        from homeserver.core.signing import generate_signing_key
        from homeserver.federation.backoff import BackoffPolicy
        from homeserver.federation.destinations import DestinationBackoff
        from homeserver.federation.discovery import ServerResolver
        from homeserver.federation.ip_filter import ALLOW_ALL
        from homeserver.federation.keyring import Keyring
        from homeserver.federation.keys import LocalKeys
        from homeserver.federation.sender import FederationSender
        from homeserver.handlers.passwords import PasswordHasher
        from homeserver.http.federation_client import FederationClient, TlsPolicy, load_ca_certificates
        from homeserver.http.server import JsonResource, make_site
        from homeserver.replication import CommandDispatcher
        from homeserver.rest.client import register_account_api
        from homeserver.rest.federation.auth import FederationAuthenticator
        from homeserver.rest.federation.keys import register_key_server, register_version
        from storage.database import Database
        from storage.migrations import prepare_database
        from storage.stores.federation import FederationQueueStore
        from storage.stores.server_keys import ServerKeyStore
        from storage.streams import ensure_stream_shards
        from workers.accounts import build_account_api
        from workers.federation import build_federation_rooms, mount_federation_rooms
        from workers.rooms import (
            build_ephemeral_api,
            build_room_api,
            build_room_commands,
            build_sync_api,
            register_ephemeral_api,
            register_room_api,
            register_sync_api,
            register_presence_api,
            register_to_device_api,
            track_writes,
        )

        self.db = Database(create_test_database(testcase), reactor, pool_size=4)
        testcase.addCleanup(self.db.close)
        await prepare_database(self.db)
        await ensure_stream_shards(self.db, SHARDS)

        cert_path, key_and_cert = shared_tls()
        self.resource = JsonResource(reactor)
        site = make_site(self.resource, reactor)
        self.port = reactor.listenSSL(0, site, ssl.PrivateCertificate.loadPEM(key_and_cert).options(), interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        self.server_name = f"{host}:{self.port.getHost().port}"
        self.client_site = make_site(self.resource, task.Clock())

        config = AccountsConfig(
            server_name=self.server_name,
            registration=RegistrationConfig(enable_registration=True),
            password_policy=PasswordPolicyConfig(bcrypt_rounds=4),
            sessions=SessionsConfig(token_cache_ms=0),
            rate_limits=RateLimitsConfig(enabled=False),
        )
        hasher = PasswordHasher(reactor, rounds=4, run_in_thread=lambda fn, *a: defer.succeed(fn(*a)))
        self.accounts = build_account_api(reactor, config, self.db, MemoryRateLimiter(reactor), hasher=hasher)
        register_account_api(self.resource, self.accounts)

        self.bus = MemoryBus(reactor, block_seconds=0.05)
        testcase.addCleanup(self.bus.close)
        signing_key = generate_signing_key("k1")
        self.rooms = await build_room_api(reactor, self.server_name, self.db, self.bus, signing_key, SHARDS,
                                          frozenset(range(SHARDS["events"])), profile_lookup=self.accounts.profile_store.get_profile)
        self.sync = await build_sync_api(reactor, self.db, MemoryBus(reactor, self.bus.broker, block_seconds=0.05), SHARDS)
        testcase.addCleanup(self.sync.stop)
        testcase.addCleanup(self._stop_typing_timers)
        track_writes(self.rooms, self.sync)
        register_sync_api(self.resource, self.sync, self.accounts.authenticator)
        owned = {stream: frozenset(range(n)) for stream, n in SHARDS.items()}
        self.ephemeral = await build_ephemeral_api(reactor, self.db, self.bus, SHARDS, owned, self.rooms.store,
                                                   self.accounts.account_data_store)
        if self.ephemeral.presence_writer is not None:
            testcase.addCleanup(self.ephemeral.presence_writer.stop)
        # One dispatcher for the room commands and the federation commands
        # (this single instance owns every shard).
        dispatcher = CommandDispatcher(_ShardMap(), "main", client=None)
        commands = build_room_commands(dispatcher, self.rooms, self.ephemeral)
        register_room_api(self.resource, self.rooms, commands, self.accounts.authenticator)
        register_ephemeral_api(self.resource, commands, self.accounts.authenticator)
        register_to_device_api(self.resource, self.ephemeral, self.accounts.authenticator)
        register_presence_api(self.resource, self.ephemeral, self.accounts.authenticator)
        from workers.directory import build_directory_api, register_directory_api

        register_directory_api(self.resource, build_directory_api(self.server_name, self.db, self.rooms),
                               self.accounts.authenticator)

        queue_store = FederationQueueStore(self.db)
        backoff = DestinationBackoff(reactor, queue_store, BackoffPolicy(min_interval_ms=100, max_interval_ms=500, jitter=0.0))
        dns = FakeDns()
        client = FederationClient(
            reactor, self.server_name, signing_key, ServerResolver(reactor, dns, NoWellKnown()), dns,
            TlsPolicy(verify=True, trust_root=load_ca_certificates(cert_path)), backoff=backoff, timeout=5.0,
            address_filter=ALLOW_ALL,
        )
        testcase.addCleanup(client.close)
        keyring = Keyring(reactor, LocalKeys(self.server_name, [signing_key]), ServerKeyStore(self.db), client, [])
        self.sender = FederationSender(reactor, self.server_name, "main", ["main"], queue_store, client, backoff,
                                       poll_interval_seconds=0.2)
        testcase.addCleanup(lambda: defer.ensureDeferred(self.sender.stop()))
        self.federation = build_federation_rooms(reactor, self.server_name, self.db, self.rooms, dispatcher, keyring,
                                                 client, self.sender.queue, ephemeral=self.ephemeral,
                                                 profiles=self.accounts.profiles)
        register_key_server(self.resource, keyring)
        register_version(self.resource)
        mount_federation_rooms(self.resource, self.federation,
                               FederationAuthenticator(self.server_name, keyring, on_origin_seen=self.sender.destination_is_up))
        self.sender.start()
        return self

    def _stop_typing_timers(self) -> None:
        for room in self.ephemeral.typing._typing.values():
            for _, timer in room.values():
                if timer.active():
                    timer.cancel()

    async def request(self, method: str, path: str, body: Any = None, token: Any = None) -> Any:
        """A client-server request, in memory."""
        resp = make_request(self.client_site, method, path, body, access_token=token)
        await wait_for_response(resp)
        return resp

    async def register(self, name: str) -> str:
        resp = await self.request("POST", "/_matrix/client/v3/register",
                                  {"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        assert resp.code == 200, resp.body
        return resp.json["access_token"]

    def uid(self, name: str) -> str:
        return f"@{name}:{self.server_name}"

    async def timeline(self, token: str, room_id: str) -> list[dict[str, Any]]:
        resp = await self.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50", token=token)
        assert resp.code == 200, resp.body
        return resp.json["chunk"]

    async def bodies(self, token: str, room_id: str) -> list[str]:
        return [e["content"].get("body") for e in await self.timeline(token, room_id) if e["type"] == "m.room.message"]


class TwoServersTests(unittest.TestCase):
    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=20, what=what)

    async def joined_room(self) -> tuple[Homeserver, Homeserver, str, str, str]:
        """A and B, alice@A's public room that bob@B joined (A has seen the join)."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_version": "10"}, token=alice)
        room_id = resp.json["room_id"]
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?" + urlencode({"server_name": a.server_name}),
                               {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob() -> bool:
            r = await a.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=alice)
            return b.uid("bob") in r.json.get("joined", {})

        await self.wait(a_sees_bob, "A sees bob joined")
        return a, b, alice, bob, room_id

    async def test_typing_and_receipts(self) -> None:
        """alice typing shows in bob's /sync on B; bob's read receipt shows in alice's /sync on A."""
        a, b, alice, bob, room_id = await self.joined_room()
        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(a.uid('alice'))}",
                               {"typing": True, "timeout": 20000}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def bob_sees_typing() -> bool:
            r = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
            room = r.json.get("rooms", {}).get("join", {}).get(room_id, {})
            return any(e["type"] == "m.typing" and a.uid("alice") in e["content"]["user_ids"]
                       for e in room.get("ephemeral", {}).get("events", []))

        await self.wait(bob_sees_typing, "typing reaches B")
        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/r1",
                               {"msgtype": "m.text", "body": "read me"}, token=alice)
        event_id = resp.json["event_id"]

        async def b_has_event() -> bool:
            return "read me" in await b.bodies(bob, room_id)

        await self.wait(b_has_event, "message reaches B")
        resp = await b.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def alice_sees_receipt() -> bool:
            r = await a.request("GET", "/_matrix/client/v3/sync?timeout=0", token=alice)
            room = r.json.get("rooms", {}).get("join", {}).get(room_id, {})
            return any(e["type"] == "m.receipt" and b.uid("bob") in e["content"].get(event_id, {}).get("m.read", {})
                       for e in room.get("ephemeral", {}).get("events", []))

        await self.wait(alice_sees_receipt, "receipt reaches A")

    async def test_to_device_across_servers(self) -> None:
        """alice@A's sendToDevice to bob@B arrives in bob's /sync on B once, even when alice retries the txn."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        for txn, n in (("t1", 1), ("t1", 1), ("t2", 2)):
            resp = await a.request("PUT", f"/_matrix/client/v3/sendToDevice/m.test/{txn}",
                                   {"messages": {b.uid("bob"): {"*": {"n": n}}}}, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
        seen: list[dict[str, Any]] = []

        async def bob_has_both() -> bool:
            r = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
            seen[:] = r.json.get("to_device", {}).get("events", [])
            return any(e["content"].get("n") == 2 for e in seen)

        await self.wait(bob_has_both, "to-device messages reach B")
        self.assertEqual(sorted(e["content"]["n"] for e in seen), [1, 2])
        self.assertTrue(all(e["sender"] == a.uid("alice") and e["type"] == "m.test" for e in seen), seen)

    async def test_remote_profile_and_alias(self) -> None:
        """bob@B reads alice@A's profile and A's alias, then joins the room by that alias alone."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("PUT", f"/_matrix/client/v3/profile/{quote(a.uid('alice'))}/displayname",
                               {"displayname": "Alice of A"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("GET", f"/_matrix/client/v3/profile/{quote(a.uid('alice'))}", token=bob)
        self.assertEqual((resp.code, resp.json.get("displayname")), (200, "Alice of A"), resp.body)
        resp = await b.request("GET", f"/_matrix/client/v3/profile/{quote(a.uid('alice'))}/displayname", token=bob)
        self.assertEqual(resp.json, {"displayname": "Alice of A"})
        resp = await b.request("GET", f"/_matrix/client/v3/profile/{quote(a.uid('alice'))}/avatar_url", token=bob)
        self.assertEqual((resp.code, resp.json["errcode"]), (404, "M_NOT_FOUND"), resp.body)
        resp = await b.request("GET", f"/_matrix/client/v3/profile/{quote('@nobody:' + a.server_name)}", token=bob)
        self.assertEqual((resp.code, resp.json["errcode"]), (404, "M_NOT_FOUND"), resp.body)
        resp = await b.request("GET", f"/_matrix/client/v3/profile/{quote('@x:unreachable.test')}", token=bob)
        self.assertEqual(resp.code, 502, resp.body)

        resp = await a.request("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "public_chat", "room_alias_name": "hall"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]
        resp = await b.request("GET", f"/_matrix/client/v3/directory/room/{quote('#hall:' + a.server_name)}", token=bob)
        self.assertEqual((resp.code, resp.json), (200, {"room_id": room_id, "servers": [a.server_name]}), resp.body)
        resp = await b.request("GET", f"/_matrix/client/v3/directory/room/{quote('#nope:' + a.server_name)}", token=bob)
        self.assertEqual((resp.code, resp.json["errcode"]), (404, "M_NOT_FOUND"), resp.body)
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote('#hall:' + a.server_name)}", {}, token=bob)
        self.assertEqual((resp.code, resp.json.get("room_id")), (200, room_id), resp.body)
        membership = await b.rooms.store.get_membership(room_id, b.uid("bob"))
        self.assertEqual(membership.membership, "join")

    async def test_presence_across_servers(self) -> None:
        """alice@A's status reaches bob@B's /sync and GET /presence, and bob's reaches alice."""
        a, b, alice, bob, room_id = await self.joined_room()
        resp = await a.request("PUT", f"/_matrix/client/v3/presence/{quote(a.uid('alice'))}/status",
                               {"presence": "online", "status_msg": "at A"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("PUT", f"/_matrix/client/v3/presence/{quote(b.uid('bob'))}/status",
                               {"presence": "unavailable", "status_msg": "at B"}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        def sees(hs: Homeserver, token: str, user_id: str, state: str, msg: str) -> Any:
            async def check() -> bool:
                r = await hs.request("GET", "/_matrix/client/v3/sync?timeout=0", token=token)
                return any(e["sender"] == user_id and e["content"].get("presence") == state
                           and e["content"].get("status_msg") == msg
                           for e in r.json.get("presence", {}).get("events", []))
            return check

        await self.wait(sees(b, bob, a.uid("alice"), "online", "at A"), "alice's presence reaches B")
        await self.wait(sees(a, alice, b.uid("bob"), "unavailable", "at B"), "bob's presence reaches A")
        resp = await b.request("GET", f"/_matrix/client/v3/presence/{quote(a.uid('alice'))}/status", token=bob)
        self.assertEqual((resp.json["presence"], resp.json.get("status_msg")), ("online", "at A"), resp.body)

    async def test_kick_reaches_both_sides(self) -> None:
        """alice kicks bob: A and B both show bob's membership as leave."""
        a, b, alice, bob, room_id = await self.joined_room()
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": b.uid("bob")}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def b_sees_kick() -> bool:
            membership = await b.rooms.store.get_membership(room_id, b.uid("bob"))
            return membership is not None and membership.membership == "leave"

        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        since = resp.json["next_batch"]
        await self.wait(b_sees_kick, "kick reaches B")
        resp = await b.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={quote(since)}", token=bob)
        if room_id not in resp.json["rooms"]["leave"]:  # the kick may have landed before ``since``
            resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
            self.assertNotIn(room_id, resp.json["rooms"]["join"])
        resp = await b.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/k1",
                               {"msgtype": "m.text", "body": "after kick"}, token=bob)
        self.assertEqual(resp.code, 403, resp.body)

    async def test_join_converse_leave(self) -> None:
        """alice@A creates a room; bob@B joins through A; messages flow both ways and show in /sync; bob leaves."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_version": "10"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]

        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?" + urlencode({"server_name": a.server_name}),
                               {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob() -> bool:
            r = await a.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=alice)
            return b.uid("bob") in r.json.get("joined", {})

        await self.wait(a_sees_bob, "A sees bob joined")
        resp = await b.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=bob)
        self.assertEqual(set(resp.json["joined"]), {a.uid("alice"), b.uid("bob")})

        resp = await b.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "hi from b"}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_has(body: str) -> bool:
            return body in await a.bodies(alice, room_id)

        await self.wait(lambda: a_has("hi from b"), "bob's message on A")
        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t2",
                               {"msgtype": "m.text", "body": "hi from a"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def b_has(body: str) -> bool:
            return body in await b.bodies(bob, room_id)

        await self.wait(lambda: b_has("hi from a"), "alice's message on B")
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertIn(room_id, resp.json["rooms"]["join"])

        resp = await b.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob_gone() -> bool:
            return not await a_sees_bob()

        await self.wait(a_sees_bob_gone, "A sees bob leave")

    async def test_remote_invite_then_join(self) -> None:
        """alice@A invites bob@B to a private room: B countersigns, bob sees the invite in /sync and joins through A."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "private_chat", "room_version": "10", "name": "secret"}, token=alice)
        room_id = resp.json["room_id"]
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        invite = resp.json["rooms"]["invite"].get(room_id)
        self.assertIsNotNone(invite, resp.json["rooms"])
        types = {e["type"] for e in invite["invite_state"]["events"]}
        self.assertIn("m.room.name", types)
        self.assertIn("m.room.member", types)

        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob() -> bool:
            r = await a.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=alice)
            return b.uid("bob") in r.json.get("joined", {})

        await self.wait(a_sees_bob, "A sees bob joined")
        resp = await b.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/i1",
                               {"msgtype": "m.text", "body": "thanks"}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_has() -> bool:
            return "thanks" in await a.bodies(alice, room_id)

        await self.wait(a_has, "bob's message on A")

    async def test_remote_invite_rejected(self) -> None:
        """bob@B rejects alice@A's invite: make_leave/send_leave through A; both sides show bob as left."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat", "room_version": "10"},
                               token=alice)
        room_id = resp.json["room_id"]
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        for server in (a, b):
            membership = await server.rooms.store.get_membership(room_id, b.uid("bob"))
            self.assertEqual(membership.membership, "leave", server.server_name)
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertNotIn(room_id, resp.json["rooms"]["invite"])

    async def _history_room(self, count: int) -> tuple[Homeserver, Homeserver, str, str, str]:
        """alice@A's public room with ``count`` messages sent before bob@B joins through A."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "public_chat", "room_version": "10",
                                "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                                                   "content": {"history_visibility": "shared"}}]}, token=alice)
        room_id = resp.json["room_id"]
        for i in range(count):
            resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t{i}",
                                   {"msgtype": "m.text", "body": f"early {i}"}, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?" + urlencode({"server_name": a.server_name}),
                               {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        return a, b, alice, bob, room_id

    async def _page_all(self, hs: Homeserver, token: str, room_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        start = None
        for _ in range(20):
            args = {"dir": "b", "limit": "4"}
            if start is not None:
                args["from"] = start
            resp = await hs.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?" + urlencode(args), token=token)
            self.assertEqual(resp.code, 200, resp.body)
            events += resp.json["chunk"]
            if "end" not in resp.json:
                break
            start = resp.json["end"]
        return events

    async def test_backfill_history_before_join(self) -> None:
        """bob@B pages /messages backwards past his join and sees A's earlier messages in order, exactly once."""
        a, b, alice, bob, room_id = await self._history_room(6)
        events = await self._page_all(b, bob, room_id)
        bodies = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
        self.assertEqual(bodies, [f"early {i}" for i in reversed(range(6))])
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertIn("m.room.create", [e["type"] for e in events])
        # Backfilled history is not news: /sync does not report it as new.
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        timeline = resp.json["rooms"]["join"][room_id]["timeline"]["events"]
        since = resp.json["next_batch"]
        resp = await b.request("GET", "/_matrix/client/v3/sync?" + urlencode({"timeout": "0", "since": since}), token=bob)
        self.assertNotIn(room_id, resp.json.get("rooms", {}).get("join", {}))
        self.assertTrue(timeline)

    async def test_backfilled_events_have_their_own_state_and_are_searchable(self) -> None:
        """Each backfilled event gets the state A has after it (not the join-time state), and its text is searchable."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        bob = await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_version": "10"},
                               token=alice)
        room_id = resp.json["room_id"]
        steps = [("m.room.message", "early 0"), ("m.room.topic", "old topic"), ("m.room.message", "early 1"),
                 ("m.room.topic", "new topic")]
        for i, (kind, text) in enumerate(steps):
            if kind == "m.room.topic":
                path, body = f"state/m.room.topic/", {"topic": text}
            else:
                path, body = f"send/m.room.message/h{i}", {"msgtype": "m.text", "body": text}
            resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/{path}", body, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?" + urlencode({"server_name": a.server_name}),
                               {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        events = await self._page_all(b, bob, room_id)
        backfilled = [e["event_id"] for e in events if e["type"] in ("m.room.message", "m.room.topic", "m.room.create")]
        self.assertEqual(len(backfilled), 5, [e["type"] for e in events])
        theirs = await a.rooms.store.get_events(room_id, backfilled)
        their_states = await a.rooms.store.get_state_ids_for_groups(room_id, {r.state_group for r in theirs.values()})
        ours = await b.federation._fed.get_state_after(room_id, backfilled)
        for event_id in backfilled:
            self.assertEqual(ours[event_id], their_states[theirs[event_id].state_group], event_id)
        resp = await b.request("POST", "/_matrix/client/v3/search",
                               {"search_categories": {"room_events": {"search_term": "early"}}}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        found = {r["result"]["content"]["body"] for r in resp.json["search_categories"]["room_events"]["results"]}
        self.assertEqual(found, {"early 0", "early 1"})

    async def test_backfill_drops_bad_signatures(self) -> None:
        """A backfilled PDU whose signature fails is not stored; the good ones are."""
        a, b, alice, bob, room_id = await self._history_room(3)
        real = a.federation.backfill

        async def tampered(origin: str, rid: str, v: Any, limit: int) -> Any:
            response = await real(origin, rid, v, limit)
            for pdu in response["pdus"]:
                if pdu.get("content", {}).get("body") == "early 1":
                    sigs = pdu["signatures"][a.server_name]
                    for key in sigs:
                        sigs[key] = "A" * 86
            return response

        a.federation.backfill = tampered
        events = await self._page_all(b, bob, room_id)
        bodies = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["early 2", "early 0"])
