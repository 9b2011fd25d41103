"""Interop with Synapse: an in-process Estuary and a Synapse process federate over TLS on loopback.

Skipped unless a Synapse venv exists (``SYNAPSE_VENV``, default
/work/synapse-venv). Both servers are named ``127.0.0.1:<port>`` so no DNS
is involved; both serve the shared test certificate; Synapse does not
verify certificates (``federation_verify_certificates: false``), Estuary
trusts the test certificate.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor, threads
from twisted.trial import unittest

from tests.integration.federation.test_two_servers import Homeserver
from tests.utils.federation import shared_tls
from tests.utils.wait import wait_until

VENV = os.environ.get("SYNAPSE_VENV", "/work/synapse-venv")


def _synapse_request(peer: Any, method: str, path: str, body: Any = None, token: str = None) -> Any:
    import ssl

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(peer.base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl._create_unverified_context()) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class SynapseInteropTests(unittest.TestCase):
    timeout = 240

    def setUp(self) -> None:
        if not os.path.exists(os.path.join(VENV, "bin", "python")):
            raise unittest.SkipTest(f"no Synapse venv at {VENV}")

    async def start_synapse(self) -> Any:
        from scripts.synapse_peer import SynapsePeer
        from tests.utils.services import dsn_for_database
        from workers.embedded import free_port

        cert_path, key_and_cert = shared_tls()
        key_pem = key_and_cert.split(b"-----BEGIN CERTIFICATE-----")[0]
        key_path = os.path.join(os.path.dirname(cert_path), "key.pem")
        with open(key_path, "wb") as f:
            f.write(key_pem)
        port = free_port()
        peer = SynapsePeer(VENV, tempfile.mkdtemp(prefix="synapse-interop-"), dsn_for_database,
                           server_name=f"127.0.0.1:{port}", port=port, tls=(cert_path, key_path))
        await threads.deferToThread(peer.start)
        self.addCleanup(lambda: threads.deferToThread(peer.stop))
        return peer

    async def call(self, peer: Any, method: str, path: str, body: Any = None, token: str = None) -> Any:
        return await threads.deferToThread(_synapse_request, peer, method, path, body, token)

    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=60, what=what)

    async def estuary_room_with_synapse_member(self) -> tuple[Any, Any, str, str, str, str]:
        """(estuary, synapse peer, alice's token, sam's ID, sam's token, room ID): alice@Estuary's
        public room, which sam@Synapse joined through Estuary (Estuary has seen the join)."""
        estuary = await Homeserver().start(self, "127.0.0.1")
        peer = await self.start_synapse()
        code, body = await self.call(peer, "POST", "/_matrix/client/v3/register",
                                     {"username": "sam", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, body)
        sam_token, sam = body["access_token"], body["user_id"]
        alice = await estuary.register("alice")
        resp = await estuary.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_version": "10"},
                                     token=alice)
        room_id = resp.json["room_id"]
        code, body = await self.call(peer, "POST", f"/_matrix/client/v3/join/{quote(room_id)}?server_name={quote(estuary.server_name)}",
                                     {}, sam_token)
        self.assertEqual(code, 200, body)

        async def estuary_sees_sam() -> bool:
            r = await estuary.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=alice)
            return sam in r.json.get("joined", {})

        await self.wait(estuary_sees_sam, "Estuary sees the Synapse user joined")
        return estuary, peer, alice, sam, sam_token, room_id

    async def test_synapse_user_joins_estuary_room_and_kick(self) -> None:
        """A Synapse user joins an Estuary room; messages reach both sides; Estuary's kick reaches Synapse."""
        estuary, peer, alice, sam, sam_token, room_id = await self.estuary_room_with_synapse_member()
        code, body = await self.call(peer, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/s1",
                                     {"msgtype": "m.text", "body": "hello from synapse"}, sam_token)
        self.assertEqual(code, 200, body)

        async def estuary_has() -> bool:
            return "hello from synapse" in await estuary.bodies(alice, room_id)

        await self.wait(estuary_has, "Synapse's message on Estuary")
        resp = await estuary.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/e1",
                                     {"msgtype": "m.text", "body": "hello from estuary"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def synapse_has(text: str) -> bool:
            code, body = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50",
                                         None, sam_token)
            return code == 200 and any(e.get("content", {}).get("body") == text for e in body.get("chunk", []))

        await self.wait(lambda: synapse_has("hello from estuary"), "Estuary's message on Synapse")
        resp = await estuary.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": sam}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def synapse_sees_kick() -> bool:
            code, body = await self.call(peer, "GET", "/_matrix/client/v3/joined_rooms", None, sam_token)
            return code == 200 and room_id not in body.get("joined_rooms", [])

        await self.wait(synapse_sees_kick, "kick reaches Synapse")

    async def test_estuary_user_joins_synapse_room(self) -> None:
        """An Estuary user joins a Synapse room through make_join/send_join; messages both ways; Synapse's kick reaches Estuary."""
        estuary = await Homeserver().start(self, "127.0.0.1")
        peer = await self.start_synapse()
        code, body = await self.call(peer, "POST", "/_matrix/client/v3/register",
                                     {"username": "sam", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, body)
        sam_token = body["access_token"]
        code, body = await self.call(peer, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, sam_token)
        self.assertEqual(code, 200, body)
        room_id = body["room_id"]
        alice = await estuary.register("alice")
        resp = await estuary.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?server_name={quote(peer.server_name)}",
                                     {}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def synapse_sees_alice() -> bool:
            code, body = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", None, sam_token)
            return code == 200 and estuary.uid("alice") in body.get("joined", {})

        await self.wait(synapse_sees_alice, "Synapse sees the Estuary user joined")
        resp = await estuary.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/e1",
                                     {"msgtype": "m.text", "body": "hello from estuary"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def synapse_has(text: str) -> bool:
            code, body = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50",
                                         None, sam_token)
            return code == 200 and any(e.get("content", {}).get("body") == text for e in body.get("chunk", []))

        await self.wait(lambda: synapse_has("hello from estuary"), "Estuary's message on Synapse")
        code, body = await self.call(peer, "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/s1",
                                     {"msgtype": "m.text", "body": "hello from synapse"}, sam_token)
        self.assertEqual(code, 200, body)

        async def estuary_has() -> bool:
            return "hello from synapse" in await estuary.bodies(alice, room_id)

        await self.wait(estuary_has, "Synapse's message on Estuary")
        code, body = await self.call(peer, "POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick",
                                     {"user_id": estuary.uid("alice")}, sam_token)
        self.assertEqual(code, 200, body)

        async def estuary_sees_kick() -> bool:
            membership = await estuary.rooms.store.get_membership(room_id, estuary.uid("alice"))
            return membership is not None and membership.membership == "leave"

        await self.wait(estuary_sees_kick, "kick reaches Estuary")

    async def test_concurrent_state_fork_resolves_the_same_on_both(self) -> None:
        """Estuary and Synapse change the topic and name at once, each unaware of the other (a fork in
        the DAG); once the events cross, both servers hold the same current state."""
        from twisted.internet import defer

        estuary, peer, alice, sam, sam_token, room_id = await self.estuary_room_with_synapse_member()
        q = quote(room_id)
        resp = await estuary.request("GET", f"/_matrix/client/v3/rooms/{q}/state/m.room.power_levels/", token=alice)
        levels = resp.json
        levels["users"][sam] = 100
        resp = await estuary.request("PUT", f"/_matrix/client/v3/rooms/{q}/state/m.room.power_levels/", levels, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def synapse_sees_power() -> bool:
            code, body = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{q}/state/m.room.power_levels/", None, sam_token)
            return code == 200 and body.get("users", {}).get(sam) == 100

        await self.wait(synapse_sees_power, "Synapse has sam's power")

        # Partition: Estuary holds Synapse's transactions and sends nothing.
        gate: defer.Deferred = defer.Deferred()
        original = estuary.federation.on_transaction

        async def held(origin: str, txn_id: str, body: Any) -> Any:
            await gate
            return await original(origin, txn_id, body)

        estuary.federation.on_transaction = held
        await estuary.sender.stop()
        code, body = await self.call(peer, "PUT", f"/_matrix/client/v3/rooms/{q}/state/m.room.topic/", {"topic": "synapse topic"}, sam_token)
        self.assertEqual(code, 200, body)
        synapse_topic = body["event_id"]
        code, body = await self.call(peer, "PUT", f"/_matrix/client/v3/rooms/{q}/state/m.room.name/", {"name": "synapse name"}, sam_token)
        self.assertEqual(code, 200, body)
        synapse_name = body["event_id"]
        resp = await estuary.request("PUT", f"/_matrix/client/v3/rooms/{q}/state/m.room.topic/", {"topic": "estuary topic"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        estuary_topic = resp.json["event_id"]
        resp = await estuary.request("PUT", f"/_matrix/client/v3/rooms/{q}/state/m.room.name/", {"name": "estuary name"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        estuary_name = resp.json["event_id"]
        # Heal the partition.
        gate.callback(None)
        estuary.federation.on_transaction = original
        estuary.sender.start()

        async def both_have_all() -> bool:
            held_here = await estuary.rooms.store.get_events(room_id, [synapse_topic, synapse_name])
            if len(held_here) < 2:
                return False
            for event_id in (estuary_topic, estuary_name):
                code, _ = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{q}/event/{quote(event_id)}", None, sam_token)
                if code != 200:
                    return False
            return True

        await self.wait(both_have_all, "the forked events reach both servers")
        # It was a fork: neither side's events name the other's as predecessors.
        rows = await estuary.rooms.store.get_events(room_id, [estuary_topic, estuary_name, synapse_topic, synapse_name])
        prevs = {e: set(json.loads(rows[e].json)["prev_events"]) for e in rows}
        self.assertFalse(prevs[estuary_topic] & {synapse_topic, synapse_name})
        self.assertFalse(prevs[synapse_topic] & {estuary_topic, estuary_name})

        async def states() -> tuple[dict, dict]:
            resp = await estuary.request("GET", f"/_matrix/client/v3/rooms/{q}/state", token=alice)
            ours = {(e["type"], e["state_key"]): e["event_id"] for e in resp.json}
            code, body = await self.call(peer, "GET", f"/_matrix/client/v3/rooms/{q}/state", None, sam_token)
            theirs = {(e["type"], e["state_key"]): e["event_id"] for e in body} if code == 200 else {}
            return ours, theirs

        async def agree() -> bool:
            ours, theirs = await states()
            return ours == theirs

        try:
            await self.wait(agree, "both servers resolve the fork to the same state")
        except Exception:
            ours, theirs = await states()
            self.fail(f"states differ: estuary {ours} synapse {theirs}")
        ours, _ = await states()
        self.assertIn(ours[("m.room.topic", "")], (estuary_topic, synapse_topic))
        self.assertIn(ours[("m.room.name", "")], (estuary_name, synapse_name))
