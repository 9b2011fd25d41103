"""E2E key federation with Synapse: each side queries and claims the other's keys, and device list
changes travel as ``m.device_list_update`` into the other side's /sync.

Skipped unless a Synapse venv exists (see ``test_synapse_interop``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import nacl.signing
from twisted.trial import unittest

from tests.e2e import test_synapse_interop as interop
from tests.integration.federation.test_e2e_keys_federation import KeysHomeserver
from tests.integration.rooms.test_e2e_keys import device_keys

V3 = "/_matrix/client/v3"


class SynapseKeysTests(unittest.TestCase):
    """alice on Estuary and sam on Synapse share a room."""

    timeout = 240
    # The Synapse peer helpers of the room interop tests (imported as a module so that trial
    # does not run those tests a second time from here).
    setUp = interop.SynapseInteropTests.setUp
    start_synapse = interop.SynapseInteropTests.start_synapse
    call = interop.SynapseInteropTests.call
    wait = interop.SynapseInteropTests.wait

    async def test_keys_both_ways(self) -> None:
        """Query and claim both ways; a new device on either side shows in the other's device_lists.changed."""
        estuary = await KeysHomeserver().start(self, "127.0.0.1")
        peer = await self.start_synapse()
        code, body = await self.call(peer, "POST", f"{V3}/register",
                                     {"username": "sam", "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, body)
        sam_token, sam, sam_device = body["access_token"], body["user_id"], body["device_id"]
        resp = await estuary.request("POST", f"{V3}/register", {"username": "alice", "password": "correct horse battery",
                                                                 "auth": {"type": "m.login.dummy"}})
        alice_token, alice, alice_device = resp.json["access_token"], resp.json["user_id"], resp.json["device_id"]
        resp = await estuary.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "room_version": "10"},
                                     token=alice_token)
        room_id = resp.json["room_id"]
        code, body = await self.call(peer, "POST", f"{V3}/join/{quote(room_id)}?server_name={quote(estuary.server_name)}",
                                     {}, sam_token)
        self.assertEqual(code, 200, body)

        async def estuary_sees_sam() -> bool:
            r = await estuary.request("GET", f"{V3}/rooms/{quote(room_id)}/joined_members", token=alice_token)
            return sam in r.json.get("joined", {})

        await self.wait(estuary_sees_sam, "Estuary sees the Synapse user joined")

        alice_keys = device_keys(alice, alice_device, nacl.signing.SigningKey.generate())
        resp = await estuary.request("POST", f"{V3}/keys/upload", {
            "device_keys": alice_keys, "one_time_keys": {"signed_curve25519:A1": {"key": "ka", "signatures": {}}},
        }, token=alice_token)
        self.assertEqual(resp.code, 200, resp.body)
        sam_keys = device_keys(sam, sam_device, nacl.signing.SigningKey.generate())
        code, body = await self.call(peer, "POST", f"{V3}/keys/upload", {
            "device_keys": sam_keys, "one_time_keys": {"signed_curve25519:S1": {"key": "ks", "signatures": {}}},
        }, sam_token)
        self.assertEqual(code, 200, body)

        # Synapse asks Estuary.
        async def synapse_has_alice_keys() -> bool:
            code, body = await self.call(peer, "POST", f"{V3}/keys/query", {"device_keys": {alice: []}}, sam_token)
            return code == 200 and alice_device in body.get("device_keys", {}).get(alice, {})

        await self.wait(synapse_has_alice_keys, "Synapse serves alice's keys")
        code, body = await self.call(peer, "POST", f"{V3}/keys/claim",
                                     {"one_time_keys": {alice: {alice_device: "signed_curve25519"}}}, sam_token)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["one_time_keys"][alice][alice_device], {"signed_curve25519:A1": {"key": "ka", "signatures": {}}})

        # Estuary asks Synapse.
        resp = await estuary.request("POST", f"{V3}/keys/query", {"device_keys": {sam: []}}, token=alice_token)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["failures"], {})
        got = resp.json["device_keys"][sam][sam_device]
        self.assertEqual(got["keys"], sam_keys["keys"])
        resp = await estuary.request("POST", f"{V3}/keys/claim",
                                     {"one_time_keys": {sam: {sam_device: "signed_curve25519"}}}, token=alice_token)
        self.assertEqual(resp.json["one_time_keys"][sam][sam_device], {"signed_curve25519:S1": {"key": "ks", "signatures": {}}})

        # A new Estuary device reaches Synapse's /sync and its query.
        code, body = await self.call(peer, "GET", f"{V3}/sync?timeout=0", None, sam_token)
        state: dict[str, Any] = {"sam_since": body["next_batch"]}
        second = await estuary.request("POST", f"{V3}/login", {"type": "m.login.password", "password": "correct horse battery",
                                                               "identifier": {"type": "m.id.user", "user": "alice"}})
        await estuary.request("POST", f"{V3}/keys/upload", {
            "device_keys": device_keys(alice, second.json["device_id"], nacl.signing.SigningKey.generate())},
            token=second.json["access_token"])

        async def synapse_sees_new_device() -> bool:
            code, body = await self.call(peer, "GET", f"{V3}/sync?timeout=500&since={state['sam_since']}", None, sam_token)
            if code != 200:
                return False
            state["sam_since"] = body["next_batch"]
            if alice not in body.get("device_lists", {}).get("changed", []):
                return False
            code, body = await self.call(peer, "POST", f"{V3}/keys/query", {"device_keys": {alice: []}}, sam_token)
            return second.json["device_id"] in body.get("device_keys", {}).get(alice, {})

        await self.wait(synapse_sees_new_device, "Synapse learns alice's new device")

        # A new Synapse device reaches Estuary's /sync.
        state["alice_since"] = (await estuary.request("GET", f"{V3}/sync?timeout=0", token=alice_token)).json["next_batch"]
        code, body = await self.call(peer, "POST", f"{V3}/login", {"type": "m.login.password", "password": "correct horse battery",
                                                                  "identifier": {"type": "m.id.user", "user": "sam"}})
        self.assertEqual(code, 200, body)
        sam2_token, sam2_device = body["access_token"], body["device_id"]
        code, body = await self.call(peer, "POST", f"{V3}/keys/upload", {
            "device_keys": device_keys(sam, sam2_device, nacl.signing.SigningKey.generate())}, sam2_token)
        self.assertEqual(code, 200, body)

        async def estuary_sees_new_device() -> bool:
            r = await estuary.request("GET", f"{V3}/sync?timeout=500&since={state['alice_since']}", token=alice_token)
            state["alice_since"] = r.json["next_batch"]
            if sam not in r.json["device_lists"]["changed"]:
                return False
            q = await estuary.request("POST", f"{V3}/keys/query", {"device_keys": {sam: []}}, token=alice_token)
            return sam2_device in q.json["device_keys"].get(sam, {})

        await self.wait(estuary_sees_new_device, "Estuary learns sam's new device")
