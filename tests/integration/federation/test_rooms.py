"""Room federation on one Estuary server (A) driven by a scripted remote server (B).

The test holds B's signing key, pre-seeds A's key store with B's verify key
(so no network is involved), and talks to A's real federation endpoints
with X-Matrix signed requests: make_join/send_join, /send transactions,
state and event reads. A's client API shows what clients see.
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import quote

from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import add_hashes_and_signatures, compute_event_id, generate_signing_key, key_id_of
from homeserver.federation.keyring import Keyring
from homeserver.federation.keys import LocalKeys
from homeserver.federation.request_auth import sign_request
from homeserver.federation.sender import FederationQueue
from homeserver.replication import CommandDispatcher
from homeserver.rest.federation.auth import FederationAuthenticator
from storage.stores.federation import FederationQueueStore
from storage.stores.server_keys import ServerKeyStore
from tests.integration.rooms.base import RoomsTestCase
from unpaddedbase64 import encode_base64

B = "b.test"
C = "c.test"


class _Owner:
    def __init__(self, name: str) -> None:
        self.name = name


class _ShardMap:
    """Every shard of every stream is owned by this one instance."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.stream_shards = counts

    def shard_owner(self, stream: str, shard: int) -> Any:
        return _Owner("main")


class _NoNetwork:
    """The federation client of A in these tests: every request fails (B and C are scripted)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        #: What ``get_missing_events`` answers, when set.
        self.missing_events: Optional[list[dict[str, Any]]] = None
        #: ``/state_ids`` answer and ``event_id -> PDU`` served by ``/event``, when set.
        self.state_ids: Optional[dict[str, Any]] = None
        self.events: dict[str, dict[str, Any]] = {}

    async def get_json(self, destination: str, path: str, args: Any = None, **kw: Any) -> Any:
        from urllib.parse import unquote

        self.requests.append((destination, path))
        if "/state_ids/" in path and self.state_ids is not None:
            return self.state_ids
        if "/event/" in path:
            event_id = unquote(path.rsplit("/", 1)[1])
            if event_id in self.events:
                return {"origin": destination, "origin_server_ts": 0, "pdus": [self.events[event_id]]}
        raise OSError("no network in this test")

    async def post_json(self, destination: str, path: str, data: Any, args: Any = None, **kw: Any) -> Any:
        self.requests.append((destination, path))
        if "/get_missing_events/" in path and self.missing_events is not None:
            return {"events": self.missing_events}
        raise OSError("no network in this test")


class FederationRoomsTestCase(RoomsTestCase):
    """Server A (``test.local``) with its federation room endpoints; B and C are scripted."""

    check_responses_against_spec = False

    async def extra_setup(self) -> None:
        from workers.federation import build_federation_rooms, mount_federation_rooms

        self.a_key = generate_signing_key("a1")
        self.keys = {B: generate_signing_key("b1"), C: generate_signing_key("c1")}
        key_store = ServerKeyStore(self.db)
        far = 10**14
        for server, key in self.keys.items():
            vk = encode_base64(key.verify_key.encode())
            body = {"server_name": server, "valid_until_ts": far, "verify_keys": {key_id_of(key): {"key": vk}}}
            await key_store.store_key_response(server, server, self.now_ms(), json.dumps(body), [(key_id_of(key), vk, far, None)])
        self.network = _NoNetwork()
        keyring = Keyring(self.clock, LocalKeys(self.server_name, [self.a_key]), key_store, self.network, [])
        self.queue_store = FederationQueueStore(self.db)
        queue = FederationQueue(self.clock, self.server_name, self.queue_store)
        dispatcher = CommandDispatcher(_ShardMap(dict(self.shard_counts)), "main", client=None)
        self.fed = build_federation_rooms(
            self.clock, self.server_name, self.db, self.rooms_api, dispatcher, keyring, self.network, queue
        )
        mount_federation_rooms(self.resource, self.fed, FederationAuthenticator(self.server_name, keyring))

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- scripted remote servers -----------------------------------------------------

    async def fed_request(self, method: str, path: str, body: Any = None, origin: str = B,
                          destination: Optional[str] = None, key: Any = None) -> Any:
        """A request to A signed as ``origin`` (for ``destination``, default A)."""
        auth = sign_request(origin, key or self.keys[origin], destination or self.server_name, method, path, body)
        return await self.request(method, path, body, headers={"Authorization": auth})

    def sign_event(self, pdu: dict[str, Any], origin: str = B, version_id: str = "10") -> dict[str, Any]:
        """Hash and sign a PDU as ``origin``."""
        return add_hashes_and_signatures(get_room_version(version_id), pdu, origin, self.keys[origin])

    def event_id(self, pdu: dict[str, Any], version_id: str = "10") -> str:
        return compute_event_id(get_room_version(version_id), pdu)

    async def remote_join(self, room_id: str, user_id: str, origin: str = B) -> dict[str, Any]:
        """make_join + send_join (v2) as ``origin``; returns the send_join response and the join PDU."""
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user_id)}?ver=10",
                                      origin=origin)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["room_version"], "10")
        template = resp.json["event"]
        template["origin_server_ts"] = self.now_ms()
        join = self.sign_event(template, origin)
        join_id = self.event_id(join)
        resp = await self.fed_request("PUT", f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(join_id)}", join,
                                      origin=origin)
        self.assertEqual(resp.code, 200, resp.body)
        return {"response": resp.json, "join": join, "join_id": join_id}

    def message(self, room_id: str, sender: str, prev: list[str], auth: list[str], depth: int, body: str,
                etype: str = "m.room.message", state_key: Optional[str] = None, content: Any = None,
                origin: str = B) -> dict[str, Any]:
        pdu = {
            "room_id": room_id, "type": etype, "sender": sender, "content": content or {"msgtype": "m.text", "body": body},
            "origin_server_ts": self.now_ms(), "depth": depth, "prev_events": prev, "auth_events": auth,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        return self.sign_event(pdu, origin)

    async def send_txn(self, pdus: list[dict[str, Any]], origin: str = B, txn: str = "t1", edus: Any = ()) -> Any:
        body = {"origin": origin, "origin_server_ts": self.now_ms(), "pdus": pdus, "edus": list(edus)}
        return await self.fed_request("PUT", f"/_matrix/federation/v1/send/{txn}", body, origin=origin)

    async def setup_joined_room(self) -> dict[str, Any]:
        """alice creates a public room on A, @bob:b.test joins it over federation."""
        self.alice = await self.make_user("alice")
        room_id = await self.create_room(self.alice, preset="public_chat", room_version="10")
        joined = await self.remote_join(room_id, f"@bob:{B}")
        state = {(p["type"], p["state_key"]): self.event_id(p) for p in joined["response"]["state"]}
        return {"room_id": room_id, "join_id": joined["join_id"], "state": state}

    async def timeline_bodies(self, room_id: str) -> list[str]:
        resp = await self.get(self.alice, f"/rooms/{room_id}/messages?dir=b&limit=50")
        self.assertEqual(resp.code, 200, resp.body)
        return [e["content"].get("body") for e in resp.json["chunk"] if e["type"] == "m.room.message"]

    async def outbox(self, destination: str) -> list[str]:
        def txn_fn(txn: Any) -> list[str]:
            txn.execute("SELECT event_id FROM federation_outbox WHERE destination = %s AND kind = 'pdu' ORDER BY id",
                        (destination,))
            return [r[0] for r in txn.fetchall()]

        return await self.db.run_interaction("outbox", txn_fn)


class JoinAndMessagesTests(FederationRoomsTestCase):
    async def test_remote_join_then_messages_both_ways(self) -> None:
        """B joins through A (state and auth chain returned), B's message reaches A's clients, A's reaches B's queue."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        self.assertIn(("m.room.create", ""), room["state"])
        self.assertIn(("m.room.member", f"@alice:{self.server_name}"), room["state"])
        members = await self.get(self.alice, f"/rooms/{room_id}/joined_members")
        self.assertIn(f"@bob:{B}", members.json["joined"])

        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        msg = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "hello from b")
        resp = await self.send_txn([msg])
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertIn("hello from b", await self.timeline_bodies(room_id))

        def searchable(txn):
            txn.execute("SELECT 1 FROM event_search WHERE room_id = %s AND event_id = %s", (room_id, self.event_id(msg)))
            return txn.fetchone() is not None

        self.assertTrue(await self.db.run_interaction("search_row", searchable), "received message indexed for search")

        sent = await self.send(self.alice, room_id, {"msgtype": "m.text", "body": "hello from a"}, "txn1")
        self.assertEqual(sent.code, 200, sent.body)
        event_id = sent.json["event_id"]
        await self.wait_for_outbox(B, event_id)

        # B reads the event and the state at it.
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/event/{quote(event_id)}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["pdus"][0]["content"]["body"], "hello from a")
        self.assertNotIn("unsigned", resp.json["pdus"][0])
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/state_ids/{quote(room_id)}?event_id={quote(event_id)}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertIn(room["join_id"], resp.json["pdu_ids"])
        self.assertIn(room["state"][("m.room.create", "")], resp.json["auth_chain_ids"])

    async def wait_for_outbox(self, destination: str, event_id: str) -> None:
        from tests.utils.wait import wait_until
        from twisted.internet import reactor

        async def queued() -> bool:
            return event_id in await self.outbox(destination)

        await wait_until(reactor, queued, timeout=10, what="PDU queued for " + destination)

    async def test_duplicate_transaction_is_idempotent(self) -> None:
        """The same PDU sent twice is stored once and both answers are success."""
        room = await self.setup_joined_room()
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        msg = self.message(room["room_id"], f"@bob:{B}", [room["join_id"]], auth, 10, "once")
        for txn in ("t1", "t2"):
            resp = await self.send_txn([msg], txn=txn)
            self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertEqual((await self.timeline_bodies(room["room_id"])).count("once"), 1)

    async def test_backfill_and_missing_events(self) -> None:
        """/backfill walks prev_events newest first; /get_missing_events returns the gap oldest first."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        ids = []
        for n in range(3):
            sent = await self.send(self.alice, room_id, {"msgtype": "m.text", "body": f"m{n}"}, f"tx{n}")
            ids.append(sent.json["event_id"])
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/backfill/{quote(room_id)}?v={quote(ids[-1])}&limit=2")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([p["content"].get("body") for p in resp.json["pdus"]], ["m2", "m1"])
        resp = await self.fed_request("POST", f"/_matrix/federation/v1/get_missing_events/{quote(room_id)}",
                                      {"earliest_events": [ids[0]], "latest_events": [ids[2]], "limit": 10})
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([p["content"].get("body") for p in resp.json["events"]], ["m1"])


class QueryTests(FederationRoomsTestCase):
    async def test_directory_and_profile(self) -> None:
        """/query/directory resolves a local alias with servers; /query/profile returns a local user's profile."""
        self.alice = await self.make_user("alice")
        room_id = await self.create_room(self.alice, preset="public_chat", room_alias_name="lobby")
        alias = f"#lobby:{self.server_name}"
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/query/directory?room_alias={quote(alias)}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"room_id": room_id, "servers": [self.server_name]})
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/query/directory?room_alias={quote('#nope:' + self.server_name)}")
        self.assertEqual(resp.code, 404)
        await self.request("PUT", f"/_matrix/client/v3/profile/{quote(self.uid('alice'))}/displayname",
                           {"displayname": "Alice"}, token=self.alice)
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/query/profile?user_id={quote(self.uid('alice'))}&field=displayname")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"displayname": "Alice"})
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/query/profile?user_id={quote('@ghost:' + self.server_name)}")
        self.assertEqual(resp.code, 404)


class MissingEventsTests(FederationRoomsTestCase):
    async def test_gap_is_filled_from_origin(self) -> None:
        """A PDU whose prev event A lacks: A asks B's /get_missing_events, processes the gap, then the PDU."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        first = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "first")
        second = self.message(room_id, f"@bob:{B}", [self.event_id(first)], auth, 11, "second")
        self.network.missing_events = [first]
        resp = await self.send_txn([second])
        self.assertEqual(resp.json["pdus"], {self.event_id(second): {}})
        self.assertTrue(any("/get_missing_events/" in path for _, path in self.network.requests))
        bodies = await self.timeline_bodies(room_id)
        self.assertEqual([b for b in bodies if b in ("first", "second")], ["second", "first"])

    async def test_large_gap_uses_state_from_origin(self) -> None:
        """Prev events the origin will not list: A takes the state before the PDU from /state_ids, fetches the
        state event it lacks with /event (kept as an outlier) and accepts the PDU."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        jr = room["state"][("m.room.join_rules", "")]
        unseen = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth + [jr], 10, "", etype="m.room.member",
                              state_key=f"@bob:{B}", content={"membership": "join", "displayname": "B"})
        later = self.message(room_id, f"@bob:{B}", [self.event_id(unseen)], [auth[0], auth[1], self.event_id(unseen)], 11,
                             "after the gap")
        state = dict(room["state"])
        state[("m.room.member", f"@bob:{B}")] = self.event_id(unseen)
        self.network.state_ids = {"pdu_ids": sorted(state.values()), "auth_chain_ids": sorted(set(auth + [jr]))}
        self.network.events = {self.event_id(unseen): unseen}
        resp = await self.send_txn([later])
        self.assertEqual(resp.json["pdus"], {self.event_id(later): {}})
        bodies = await self.timeline_bodies(room_id)
        self.assertIn("after the gap", bodies)
        self.assertTrue(any("/state_ids/" in path for _, path in self.network.requests))

    async def test_unfillable_gap_is_refused(self) -> None:
        """When the origin cannot supply the gap the PDU gets an error and is not stored."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        first = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "first")
        second = self.message(room_id, f"@bob:{B}", [self.event_id(first)], auth, 11, "second")
        resp = await self.send_txn([second])
        self.assertIn("missing prev events", resp.json["pdus"][self.event_id(second)]["error"])
        self.assertNotIn("second", await self.timeline_bodies(room_id))


class ForkTests(FederationRoomsTestCase):
    async def test_concurrent_state_changes_are_resolved(self) -> None:
        """alice renames the room while B concurrently changes bob's displayname on the older DAG tip:
        both changes end up in current state and alice's next event merges the two extremities."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/", {"name": "renamed"},
                                  token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"],
                room["state"][("m.room.join_rules", "")]]
        self.clock.advance(1)  # later than bob's join: it wins the (mainline, ts) ordering of state res v2
        member = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "", etype="m.room.member",
                              state_key=f"@bob:{B}", content={"membership": "join", "displayname": "Bobby"})
        resp = await self.send_txn([member])
        self.assertEqual(resp.json["pdus"], {self.event_id(member): {}})
        snapshot = await self.rooms_api.store.get_room_snapshot(room_id)
        self.assertEqual(len(snapshot.extremities), 2)
        self.assertEqual(snapshot.current_state[("m.room.member", f"@bob:{B}")], self.event_id(member))
        name = await self.get(self.alice, f"/rooms/{room_id}/state/m.room.name")
        self.assertEqual(name.json["name"], "renamed")
        sent = await self.send(self.alice, room_id, {"msgtype": "m.text", "body": "merge"}, "m1")
        self.assertEqual(sent.code, 200, sent.body)
        event = await self.rooms_api.loader.get_event(room_id, sent.json["event_id"])
        self.assertEqual(set(event.prev_event_ids), set(snapshot.extremities))


class SoftFailTests(FederationRoomsTestCase):
    async def test_event_allowed_before_a_ban_is_soft_failed(self) -> None:
        """bob is banned on A; B then sends a message built on bob's join (allowed there, not now): soft-failed,
        answered as success, never shown to clients, not an extremity."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        await self.remote_join(room_id, f"@carl:{B}")  # B stays in the room after bob's ban
        resp = await self.post(self.alice, f"/rooms/{room_id}/ban", {"user_id": f"@bob:{B}"})
        self.assertEqual(resp.code, 200, resp.body)
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        msg = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "sneaky")
        resp = await self.send_txn([msg])
        self.assertEqual(resp.json["pdus"], {self.event_id(msg): {}})
        self.assertNotIn("sneaky", await self.timeline_bodies(room_id))
        snapshot = await self.rooms_api.store.get_room_snapshot(room_id)
        self.assertNotIn(self.event_id(msg), snapshot.extremities)
        kinds = await self.fed.events._fed.get_rejected(room_id, [self.event_id(msg)])
        self.assertEqual(kinds[self.event_id(msg)][0], "soft_failed")


class RefusalTests(FederationRoomsTestCase):
    async def test_bad_signature_is_dropped(self) -> None:
        """A PDU signed with a key that is not B's gets an error and is not stored."""
        room = await self.setup_joined_room()
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        msg = self.message(room["room_id"], f"@bob:{B}", [room["join_id"]], auth, 10, "forged")
        msg["signatures"] = {B: {key_id_of(self.keys[B]): encode_base64(b"\x00" * 64)}}
        resp = await self.send_txn([msg])
        self.assertIn("signature", resp.json["pdus"][self.event_id(msg)]["error"])
        self.assertNotIn("forged", await self.timeline_bodies(room["room_id"]))

    async def test_oversized_pdu_is_dropped(self) -> None:
        """A PDU over 64 KiB is refused and not stored."""
        room = await self.setup_joined_room()
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        msg = self.message(room["room_id"], f"@bob:{B}", [room["join_id"]], auth, 10, "x" * 70000)
        resp = await self.send_txn([msg])
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["pdus"], {})
        self.assertEqual(await self.timeline_bodies(room["room_id"]), [])

    async def test_event_failing_auth_is_rejected_and_never_served(self) -> None:
        """bob (power 0) changing power levels is rejected: error result, not in the timeline, not current state."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        pl = room["state"][("m.room.power_levels", "")]
        auth = [room["state"][("m.room.create", "")], pl, room["join_id"]]
        evil = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "", etype="m.room.power_levels",
                            state_key="", content={"users": {f"@bob:{B}": 100}})
        resp = await self.send_txn([evil])
        self.assertIn("rejected", resp.json["pdus"][self.event_id(evil)]["error"])
        state = await self.get(self.alice, f"/rooms/{room_id}/state/m.room.power_levels")
        self.assertNotIn(f"@bob:{B}", state.json.get("users", {}))
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/event/{quote(self.event_id(evil))}")
        self.assertEqual(resp.code, 404)

    async def test_server_not_in_room_is_refused(self) -> None:
        """C (no member in the room) cannot send events into it nor read its state."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")]]
        msg = self.message(room_id, f"@carol:{C}", [room["join_id"]], auth, 10, "intruder", origin=C)
        resp = await self.send_txn([msg], origin=C)
        self.assertIn("not in room", resp.json["pdus"][self.event_id(msg)]["error"])
        self.assertNotIn("intruder", await self.timeline_bodies(room_id))
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/state_ids/{quote(room_id)}?event_id={quote(room['join_id'])}",
                                      origin=C)
        self.assertEqual(resp.code, 403)
        self.assertEqual(resp.json["errcode"], "M_FORBIDDEN")

    async def test_server_denied_by_acl_is_refused(self) -> None:
        """Once the room's m.room.server_acl denies B, B's PDUs get an error and its join templates 403; C is unaffected."""
        room = await self.setup_joined_room()
        room_id = room["room_id"]
        auth = [room["state"][("m.room.create", "")], room["state"][("m.room.power_levels", "")], room["join_id"]]
        before = self.message(room_id, f"@bob:{B}", [room["join_id"]], auth, 10, "before acl")
        resp = await self.send_txn([before])
        self.assertEqual(resp.json["pdus"], {self.event_id(before): {}})
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/",
                                  {"allow": ["*"], "deny": [B], "allow_ip_literals": True}, token=self.alice)
        self.assertEqual(resp.code, 200, resp.body)
        after = self.message(room_id, f"@bob:{B}", [self.event_id(before)], auth, 11, "after acl")
        resp = await self.send_txn([after], txn="t2")
        self.assertIn("server ACL", resp.json["pdus"][self.event_id(after)]["error"])
        self.assertNotIn("after acl", await self.timeline_bodies(room_id))
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote('@bob2:' + B)}?ver=10")
        self.assertEqual(resp.code, 403, resp.body)
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote('@carol:' + C)}?ver=10",
                                      origin=C)
        self.assertEqual(resp.code, 200, resp.body)

    async def test_wrong_destination_is_unauthorized(self) -> None:
        """A request signed for another destination gets 401."""
        room = await self.setup_joined_room()
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/event/{quote(room['join_id'])}", destination="elsewhere.test")
        self.assertEqual(resp.code, 401)

    async def test_make_join_for_user_of_other_server_is_refused(self) -> None:
        """B cannot ask for a join template for a user of C."""
        self.alice = await self.make_user("alice")
        room_id = await self.create_room(self.alice, preset="public_chat", room_version="10")
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote('@carol:' + C)}?ver=10")
        self.assertEqual(resp.code, 403)

    async def test_join_to_invite_only_room_is_refused(self) -> None:
        """make_join in a private room without invite is forbidden."""
        self.alice = await self.make_user("alice")
        room_id = await self.create_room(self.alice, preset="private_chat", room_version="10")
        resp = await self.fed_request("GET", f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote('@bob:' + B)}?ver=10")
        self.assertEqual(resp.code, 403, resp.body)
