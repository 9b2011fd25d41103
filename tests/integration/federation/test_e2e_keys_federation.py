"""E2E keys across two Estuary servers: remote /keys/query and /keys/claim, /user/devices, and
device list updates (``m.device_list_update``) reaching the other server's /sync."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import nacl.signing
from twisted.internet import reactor

from twisted.trial import unittest

from tests.integration.federation.test_two_servers import Homeserver, _ShardMap
from tests.integration.rooms.test_e2e_keys import device_keys
from tests.utils.wait import wait_until

V3 = "/_matrix/client/v3"


class KeysHomeserver(Homeserver):
    """A Homeserver of the two-server tests with the keys API and its federation side."""

    async def start(self, testcase: Any, host: str) -> "KeysHomeserver":
        from homeserver.replication import CommandDispatcher
        from homeserver.rest.federation.auth import FederationAuthenticator
        from homeserver.rest.federation.rooms import register_federation_keys
        from tests.integration.federation.test_two_servers import SHARDS
        from workers.rooms import build_keys_api, register_keys_api, watch_devices

        await super().start(testcase, host)
        dispatcher = CommandDispatcher(_ShardMap(), "main", client=None)
        self.keys = await build_keys_api(reactor, self.server_name, self.db, self.bus, SHARDS,
                                         frozenset(range(SHARDS["device_lists"])), dispatcher, uia=self.accounts.uia)
        watch_devices(self.accounts, self.keys)
        register_keys_api(self.resource, self.keys, self.accounts.authenticator)
        events = self.federation.events  # the FederationEventHandler: its keyring and client
        keyring = events.keyring
        self.keys.keys.attach_federation(events.client, self.sender.queue, self.federation.edu_handlers)
        register_federation_keys(self.resource, self.keys.keys,
                                 FederationAuthenticator(self.server_name, keyring, on_origin_seen=self.sender.destination_is_up))
        return self


class KeysFederationTests(unittest.TestCase):
    """alice@A and bob@B share a room; their clients see each other's keys."""

    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=20, what=what)

    async def two_users(self) -> tuple[Any, Any, dict, dict, str]:
        a = await KeysHomeserver().start(self, "a.test")
        b = await KeysHomeserver().start(self, "b.test")
        alice = (await a.request("POST", f"{V3}/register", {"username": "alice", "password": "correct horse battery",
                                                              "auth": {"type": "m.login.dummy"}})).json
        bob = (await b.request("POST", f"{V3}/register", {"username": "bob", "password": "correct horse battery",
                                                            "auth": {"type": "m.login.dummy"}})).json
        resp = await a.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "room_version": "10"},
                               token=alice["access_token"])
        room_id = resp.json["room_id"]
        resp = await b.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {},
                               token=bob["access_token"])
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob() -> bool:
            r = await a.request("GET", f"{V3}/rooms/{quote(room_id)}/joined_members", token=alice["access_token"])
            return b.uid("bob") in r.json.get("joined", {})

        await self.wait(a_sees_bob, "A sees bob joined")
        return a, b, alice, bob, room_id

    async def test_query_claim_devices_and_updates(self) -> None:
        """bob@B queries and claims alice@A's keys through B; B reads /user/devices of alice; a new
        device key upload of alice reaches bob's /sync on B as device_lists.changed."""
        a, b, alice, bob, room_id = await self.two_users()
        alice_keys = device_keys(a.uid("alice"), alice["device_id"], nacl.signing.SigningKey.generate())
        resp = await a.request("POST", f"{V3}/keys/upload", {
            "device_keys": alice_keys, "one_time_keys": {"signed_curve25519:A1": {"key": "k1", "signatures": {}}},
        }, token=alice["access_token"])
        self.assertEqual(resp.code, 200, resp.body)

        query = await b.request("POST", f"{V3}/keys/query", {"device_keys": {a.uid("alice"): []}},
                                token=bob["access_token"])
        self.assertEqual(query.code, 200, query.body)
        self.assertEqual(query.json["failures"], {})
        got = query.json["device_keys"][a.uid("alice")][alice["device_id"]]
        self.assertEqual({k: v for k, v in got.items() if k != "unsigned"}, alice_keys)

        claim = await b.request("POST", f"{V3}/keys/claim",
                                {"one_time_keys": {a.uid("alice"): {alice["device_id"]: "signed_curve25519"}}},
                                token=bob["access_token"])
        self.assertEqual(claim.code, 200, claim.body)
        self.assertEqual(claim.json["one_time_keys"],
                         {a.uid("alice"): {alice["device_id"]: {"signed_curve25519:A1": {"key": "k1", "signatures": {}}}}})

        devices = await b.keys.keys._federation.get_json(a.server_name, f"/_matrix/federation/v1/user/devices/{quote(a.uid('alice'))}")
        self.assertEqual(devices["user_id"], a.uid("alice"))
        self.assertEqual([d["device_id"] for d in devices["devices"]], [alice["device_id"]])
        self.assertGreater(devices["stream_id"], 0)

        # A server that does not answer is a failure, not an error.
        resp = await b.request("POST", f"{V3}/keys/query", {"device_keys": {"@x:nowhere.test": []}},
                               token=bob["access_token"])
        self.assertEqual(resp.code, 200)
        self.assertIn("nowhere.test", resp.json["failures"])

        since = (await b.request("GET", f"{V3}/sync?timeout=0", token=bob["access_token"])).json["next_batch"]
        second = await a.request("POST", f"{V3}/login", {"type": "m.login.password", "password": "correct horse battery",
                                                         "identifier": {"type": "m.id.user", "user": "alice"}})
        new_keys = device_keys(a.uid("alice"), second.json["device_id"], nacl.signing.SigningKey.generate())
        await a.request("POST", f"{V3}/keys/upload", {"device_keys": new_keys}, token=second.json["access_token"])
        state = {"since": since}

        async def bob_sees_change() -> bool:
            r = await b.request("GET", f"{V3}/sync?timeout=500&since={state['since']}", token=bob["access_token"])
            state["since"] = r.json["next_batch"]
            return a.uid("alice") in r.json["device_lists"]["changed"]

        await wait_until(reactor, bob_sees_change, timeout=20, what="bob sees alice's device list change")
        query = await b.request("POST", f"{V3}/keys/query", {"device_keys": {a.uid("alice"): []}},
                                token=bob["access_token"])
        self.assertEqual(sorted(query.json["device_keys"][a.uid("alice")]),
                         sorted([alice["device_id"], second.json["device_id"]]))
