"""Knocking and restricted joins between Estuary servers over TLS on loopback (issue 8).

Uses the whole-server harness of ``test_two_servers`` (each server with its
own database, client API in memory, federation on a real TLS port).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor
from twisted.trial import unittest

from tests.integration.federation.test_two_servers import Homeserver
from tests.utils.wait import wait_until


def _join_rules(rule: str, allow: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"join_rule": rule}
    if allow is not None:
        content["allow"] = allow
    return {"type": "m.room.join_rules", "state_key": "", "content": content}


class KnockTests(unittest.TestCase):
    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=20, what=what)

    async def servers(self) -> tuple[Homeserver, Homeserver, str, str]:
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        return a, b, await a.register("alice"), await b.register("bob")

    async def room(self, a: Homeserver, token: str, version: str = "10", rule: str = "knock", **extra: Any) -> str:
        body = {"preset": "private_chat", "room_version": version, "name": "knock knock",
                "initial_state": [_join_rules(rule)], **extra}
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", body, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json["room_id"]

    async def knock(self, b: Homeserver, token: str, room_id: str, via: str) -> Any:
        return await b.request("POST", f"/_matrix/client/v3/knock/{quote(room_id)}?" + urlencode({"server_name": via}),
                               {"reason": "let me in"}, token=token)

    async def test_knock_then_invite_then_join(self) -> None:
        """bob@B knocks on alice@A's room: the knock shows in bob's /sync ``knock`` section and on A;
        alice invites bob (accepting the knock) and bob joins through A."""
        a, b, alice, bob = await self.servers()
        room_id = await self.room(a, alice)
        resp = await self.knock(b, bob, room_id, a.server_name)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"room_id": room_id})

        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        knock = resp.json["rooms"]["knock"].get(room_id)
        self.assertIsNotNone(knock, resp.json["rooms"])
        events = knock["knock_state"]["events"]
        by_type = {e["type"]: e for e in events}
        self.assertEqual(by_type["m.room.name"]["content"]["name"], "knock knock")
        self.assertIn("m.room.create", by_type)
        self.assertEqual(by_type["m.room.join_rules"]["content"]["join_rule"], "knock")
        self.assertEqual(by_type["m.room.member"]["content"]["membership"], "knock")
        self.assertEqual(by_type["m.room.member"]["state_key"], b.uid("bob"))
        self.assertNotIn(room_id, resp.json["rooms"]["join"])

        # The resident side sees the knock in alice's timeline and member list.
        resp = await a.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/members?membership=knock", token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([e["state_key"] for e in resp.json["chunk"]], [b.uid("bob")])
        self.assertEqual(resp.json["chunk"][0]["content"].get("reason"), "let me in")

        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertIn(room_id, resp.json["rooms"]["invite"])
        self.assertNotIn(room_id, resp.json["rooms"]["knock"])
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

        async def a_sees_bob() -> bool:
            r = await a.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members", token=alice)
            return b.uid("bob") in r.json.get("joined", {})

        await self.wait(a_sees_bob, "A sees bob joined")

    async def test_knock_rescinded(self) -> None:
        """bob@B withdraws his knock by leaving: make_leave/send_leave through A; both sides show leave."""
        a, b, alice, bob = await self.servers()
        room_id = await self.room(a, alice)
        resp = await self.knock(b, bob, room_id, a.server_name)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await b.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        for server in (a, b):
            membership = await server.rooms.store.get_membership(room_id, b.uid("bob"))
            self.assertEqual(membership.membership, "leave", server.server_name)

    async def test_knock_denied(self) -> None:
        """alice@A denies bob@B's knock (kicks him): B, not in the room, takes the signed leave in
        and bob's knock leaves his /sync."""
        a, b, alice, bob = await self.servers()
        room_id = await self.room(a, alice)
        resp = await self.knock(b, bob, room_id, a.server_name)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick",
                               {"user_id": b.uid("bob"), "reason": "not today"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def b_sees_denial() -> bool:
            membership = await b.rooms.store.get_membership(room_id, b.uid("bob"))
            return membership is not None and membership.membership == "leave"

        await self.wait(b_sees_denial, "the denial reaches B")
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertNotIn(room_id, resp.json["rooms"]["knock"])

    async def test_invite_withdrawn(self) -> None:
        """alice@A withdraws her invite of bob@B (kicks him before he joins): B records the leave and
        the invite leaves bob's /sync."""
        a, b, alice, bob = await self.servers()
        room_id = await self.room(a, alice, rule="invite")
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        async def b_sees_withdrawal() -> bool:
            membership = await b.rooms.store.get_membership(room_id, b.uid("bob"))
            return membership is not None and membership.membership == "leave"

        await self.wait(b_sees_withdrawal, "the withdrawal reaches B")
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertNotIn(room_id, resp.json["rooms"]["invite"])

    async def test_knock_refusals(self) -> None:
        """A room version without knocking: 400 M_INCOMPATIBLE_ROOM_VERSION; join rule not knock: 403;
        a banned user: 403; an unknown room: 404. Nothing is recorded on B."""
        a, b, alice, bob = await self.servers()
        old = await self.room(a, alice, version="6", rule="invite")
        resp = await self.knock(b, bob, old, a.server_name)
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INCOMPATIBLE_ROOM_VERSION"), resp.body)
        self.assertEqual(resp.json.get("room_version"), "6")

        invite_only = await self.room(a, alice, rule="invite")
        resp = await self.knock(b, bob, invite_only, a.server_name)
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)

        knockable = await self.room(a, alice)
        resp = await a.request("POST", f"/_matrix/client/v3/rooms/{quote(knockable)}/ban", {"user_id": b.uid("bob")},
                               token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.knock(b, bob, knockable, a.server_name)
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)

        denied = await self.room(a, alice)
        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(denied)}/state/m.room.server_acl/",
                               {"allow": ["*"], "deny": ["b.test"]}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.knock(b, bob, denied, a.server_name)
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)

        resp = await self.knock(b, bob, "!nowhere:" + a.server_name, a.server_name)
        self.assertEqual(resp.code, 404, resp.body)
        for room_id in (old, invite_only, denied):
            self.assertIsNone(await b.rooms.store.get_membership(room_id, b.uid("bob")))
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        self.assertEqual(resp.json["rooms"]["knock"], {})

    async def test_make_knock_and_send_knock_checks(self) -> None:
        """The resident endpoints themselves: make_knock needs ``ver``; a user of another server, a
        mismatched event ID or a non-knock event are refused."""
        a, b, alice, bob = await self.servers()
        room_id = await self.room(a, alice)
        client = b.federation.events.client
        path = f"/_matrix/federation/v1/make_knock/{quote(room_id)}/{quote(b.uid('bob'))}"
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path)
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_MISSING_PARAM"))
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, f"/_matrix/federation/v1/make_knock/{quote(room_id)}/{quote(a.uid('mallory'))}",
                                  args={"ver": ["10"]})
        self.assertEqual(caught.exception.code, 403)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path, args={"ver": ["6"]})
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_INCOMPATIBLE_ROOM_VERSION"))
        template = await client.get_json(a.server_name, path, args={"ver": ["10"]})
        self.assertEqual(template["room_version"], "10")
        self.assertEqual(template["event"]["content"], {"membership": "knock"})

        from homeserver.core.events import Event
        from homeserver.core.room_versions import get_room_version
        from homeserver.core.signing import add_hashes_and_signatures

        version = get_room_version("10")
        signing_key = b.federation.events.creator.signing_key
        pdu = dict(template["event"], origin=b.server_name)
        knock = Event.from_pdu(add_hashes_and_signatures(version, dict(pdu), b.server_name, signing_key), version)
        with self.assertRaises(Exception) as caught:
            await client.put_json(a.server_name, f"/_matrix/federation/v1/send_knock/{quote(room_id)}/$wrong",
                                  knock.get_pdu_json())
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_INVALID_PARAM"))
        forged = knock.get_pdu_json()
        forged["signatures"] = {b.server_name: {k: "A" * 86 for k in forged["signatures"][b.server_name]}}
        with self.assertRaises(Exception) as caught:
            await client.put_json(a.server_name, f"/_matrix/federation/v1/send_knock/{quote(room_id)}/{quote(knock.event_id)}",
                                  forged)
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_INVALID_PARAM"))
        as_join = dict(pdu, content={"membership": "join"})
        join = Event.from_pdu(add_hashes_and_signatures(version, as_join, b.server_name, signing_key), version)
        with self.assertRaises(Exception) as caught:
            await client.put_json(a.server_name, f"/_matrix/federation/v1/send_knock/{quote(room_id)}/{quote(join.event_id)}",
                                  join.get_pdu_json())
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_INVALID_PARAM"))
        answer = await client.put_json(a.server_name, f"/_matrix/federation/v1/send_knock/{quote(room_id)}/{quote(knock.event_id)}",
                                       knock.get_pdu_json())
        types = {e["type"] for e in answer["knock_room_state"]}
        self.assertIn("m.room.create", types)
        self.assertTrue(all("signatures" in e for e in answer["knock_room_state"]))
        membership = await a.rooms.store.get_membership(room_id, b.uid("bob"))
        self.assertEqual(membership.membership, "knock")


class RestrictedJoinTests(unittest.TestCase):
    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=20, what=what)

    async def create(self, hs: Homeserver, token: str, **body: Any) -> str:
        resp = await hs.request("POST", "/_matrix/client/v3/createRoom", {"room_version": "10", **body}, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json["room_id"]

    async def space_and_room(self, a: Homeserver, alice: str, allow_room: Any = None) -> tuple[str, str]:
        """alice@A's public room S and room R restricted to S's members (invite level 50, alice 100)."""
        space = await self.create(a, alice, preset="public_chat")
        allow = [{"type": "m.room_membership", "room_id": allow_room or space}]
        room = await self.create(a, alice, preset="public_chat", initial_state=[_join_rules("restricted", allow)])
        return space, room

    async def join(self, hs: Homeserver, token: str, room_id: str, via: list[str]) -> Any:
        query = "?" + urlencode([("server_name", s) for s in via]) if via else ""
        return await hs.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}{query}", {}, token=token)

    async def joined(self, hs: Homeserver, room_id: str, user_id: str) -> bool:
        membership = await hs.rooms.store.get_membership(room_id, user_id)
        return membership is not None and membership.membership == "join"

    async def test_local_restricted_join(self) -> None:
        """On one server: a member of the allowed room joins the restricted room (authorised by a
        local member who may invite); a non-member is refused with 403."""
        a = await Homeserver().start(self, "a.test")
        alice = await a.register("alice")
        dave = await a.register("dave")
        space, room = await self.space_and_room(a, alice)
        resp = await self.join(a, dave, room, [])
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)
        self.assertEqual((await self.join(a, dave, space, [])).code, 200)
        resp = await self.join(a, dave, room, [])
        self.assertEqual(resp.code, 200, resp.body)
        member = await a.rooms.store.get_membership(room, a.uid("dave"))
        event = (await a.rooms.rooms.loader.get_events(room, [member.event_id]))[member.event_id]
        self.assertEqual(event.content["join_authorised_via_users_server"], a.uid("alice"))

    async def test_restricted_join_over_federation(self) -> None:
        """bob@B, not in S, is refused (403); once in S he joins R through A: A names alice as the
        authoriser and countersigns; B stores the join with A's signature."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice, bob = await a.register("alice"), await b.register("bob")
        space, room = await self.space_and_room(a, alice)
        resp = await self.join(b, bob, room, [a.server_name])
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)
        self.assertEqual((await self.join(b, bob, space, [a.server_name])).code, 200)
        resp = await self.join(b, bob, room, [a.server_name])
        self.assertEqual(resp.code, 200, resp.body)
        member = await b.rooms.store.get_membership(room, b.uid("bob"))
        event = (await b.rooms.rooms.loader.get_events(room, [member.event_id]))[member.event_id]
        self.assertEqual(event.content["join_authorised_via_users_server"], a.uid("alice"))
        self.assertIn(a.server_name, event.signatures)
        self.assertIn(b.server_name, event.signatures)
        await self.wait(lambda: self.joined(a, room, b.uid("bob")), "A sees bob in R")
        resp = await b.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/r1",
                               {"msgtype": "m.text", "body": "in"}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

    async def test_unable_to_authorise(self) -> None:
        """R allows a room A is not in: make_join answers 400 M_UNABLE_TO_AUTHORISE_JOIN, which the
        client's join reports; a send_join naming a user of A without meeting a condition is refused."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice, bob = await a.register("alice"), await b.register("bob")
        _, room = await self.space_and_room(a, alice, allow_room="!elsewhere:" + b.server_name)
        client = b.federation.events.client
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, f"/_matrix/federation/v1/make_join/{quote(room)}/{quote(b.uid('bob'))}",
                                  args={"ver": ["10"]})
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_UNABLE_TO_AUTHORISE_JOIN"))
        resp = await self.join(b, bob, room, [a.server_name])
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_UNABLE_TO_AUTHORISE_JOIN"), resp.body)

        # A forged join naming alice: A re-checks the conditions before countersigning.
        from homeserver.core.events import Event
        from homeserver.core.room_versions import get_room_version
        from homeserver.core.signing import add_hashes_and_signatures

        version = get_room_version("10")
        snapshot = await a.rooms.store.get_room_snapshot(room)
        state = snapshot.current_state
        pdu = {"room_id": room, "type": "m.room.member", "state_key": b.uid("bob"), "sender": b.uid("bob"),
               "content": {"membership": "join", "join_authorised_via_users_server": a.uid("alice")},
               "origin": b.server_name, "origin_server_ts": 1, "depth": snapshot.max_depth + 1,
               "prev_events": list(snapshot.extremities),
               "auth_events": sorted(state[k] for k in [("m.room.create", ""), ("m.room.power_levels", ""),
                                                        ("m.room.join_rules", ""), ("m.room.member", a.uid("alice"))])}
        join = Event.from_pdu(add_hashes_and_signatures(version, pdu, b.server_name, b.federation.events.creator.signing_key), version)
        with self.assertRaises(Exception) as caught:
            await client.put_json(a.server_name, f"/_matrix/federation/v2/send_join/{quote(room)}/{quote(join.event_id)}",
                                  join.get_pdu_json())
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_UNABLE_TO_AUTHORISE_JOIN"))
        self.assertFalse(await self.joined(a, room, b.uid("bob")))

    async def test_unable_to_grant_tries_next_server(self) -> None:
        """C is in S and R but its only user may not invite: C answers M_UNABLE_TO_GRANT_JOIN and
        bob@B's join, asked through C then A, succeeds through A."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        c = await Homeserver().start(self, "c.test")
        alice, bob, carol = await a.register("alice"), await b.register("bob"), await c.register("carol")
        space, room = await self.space_and_room(a, alice)
        self.assertEqual((await self.join(c, carol, space, [a.server_name])).code, 200)
        resp = await self.join(c, carol, room, [a.server_name])
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.join(b, bob, space, [a.server_name])).code, 200)
        await self.wait(lambda: self.joined(c, space, b.uid("bob")), "C sees bob in S")
        await self.wait(lambda: self.joined(a, room, c.uid("carol")), "A sees carol in R")

        client = b.federation.events.client
        with self.assertRaises(Exception) as caught:
            await client.get_json(c.server_name, f"/_matrix/federation/v1/make_join/{quote(room)}/{quote(b.uid('bob'))}",
                                  args={"ver": ["10"]})
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_UNABLE_TO_GRANT_JOIN"))
        resp = await self.join(b, bob, room, [c.server_name, a.server_name])
        self.assertEqual(resp.code, 200, resp.body)
        member = await b.rooms.store.get_membership(room, b.uid("bob"))
        event = (await b.rooms.rooms.loader.get_events(room, [member.event_id]))[member.event_id]
        self.assertEqual(event.content["join_authorised_via_users_server"], a.uid("alice"))
        await self.wait(lambda: self.joined(c, room, b.uid("bob")), "C accepts bob's countersigned join")

        # dave@C, in S, joins R, which C is in: no user of C may authorise it, so
        # C asks A (a resident whose member can) and takes the countersigned join in.
        dave = await c.register("dave")
        self.assertEqual((await self.join(c, dave, space, [])).code, 200)
        await self.wait(lambda: self.joined(a, space, c.uid("dave")), "A sees dave in S")
        resp = await self.join(c, dave, room, [])
        self.assertEqual(resp.code, 200, resp.body)
        self.assertTrue(await self.joined(c, room, c.uid("dave")))
        member = await c.rooms.store.get_membership(room, c.uid("dave"))
        event = (await c.rooms.rooms.loader.get_events(room, [member.event_id]))[member.event_id]
        self.assertEqual(event.content["join_authorised_via_users_server"], a.uid("alice"))
        await self.wait(lambda: self.joined(a, room, c.uid("dave")), "A has dave's join")
        await self.wait(lambda: self.joined(b, room, c.uid("dave")), "B has dave's join")
        resp = await c.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/d1",
                               {"msgtype": "m.text", "body": "dave here"}, token=dave)
        self.assertEqual(resp.code, 200, resp.body)
        # erin@C is in no allowed room: refused without asking anyone.
        erin = await c.register("erin")
        resp = await self.join(c, erin, room, [])
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"), resp.body)


class InviteV1Tests(unittest.TestCase):
    async def test_v1_invite_countersigned_and_joinable(self) -> None:
        """alice@A invites bob@B to a version 1 room through PUT /v1/invite: B answers [200, {event}]
        with its signature, bob sees the invite with its room state and joins through A."""
        from homeserver.core.events import Event
        from homeserver.federation.events import federation_pdu

        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice, bob = await a.register("alice"), await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom",
                               {"preset": "private_chat", "room_version": "1", "name": "old room"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]
        client = a.federation.events.client
        answers: list[Any] = []

        async def countersign_v1(event: Event) -> Event:
            body = federation_pdu(event)
            body["unsigned"] = {"invite_room_state": [{"type": "m.room.name", "state_key": "", "sender": a.uid("alice"),
                                                       "content": {"name": "old room"}}]}
            answer = await client.put_json(b.server_name, f"/_matrix/federation/v1/invite/{quote(room_id)}/{quote(event.event_id)}",
                                           body)
            answers.append(answer)
            return Event.from_pdu(answer[1]["event"], event.room_version)

        await a.rooms.rooms.creator.create_event(room_id, a.uid("alice"), "m.room.member", {"membership": "invite"},
                                                 state_key=b.uid("bob"), countersign=countersign_v1)
        self.assertEqual(answers[0][0], 200)
        self.assertIn(b.server_name, answers[0][1]["event"]["signatures"])
        resp = await b.request("GET", "/_matrix/client/v3/sync?timeout=0", token=bob)
        invite = resp.json["rooms"]["invite"].get(room_id)
        self.assertIsNotNone(invite, resp.json["rooms"])
        self.assertIn("old room", [e["content"].get("name") for e in invite["invite_state"]["events"]])
        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)

    async def test_v1_invite_refusals(self) -> None:
        """Not an invite, an invitee of another server, a body that is not an event, and a room B knows
        in a version the v1 API cannot carry: refused with 400; nothing is recorded."""
        from homeserver.core.room_versions import get_room_version
        from homeserver.core.signing import add_hashes_and_signatures

        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        client = a.federation.events.client
        key = a.federation.events.creator.signing_key
        version = get_room_version("1")
        room_id = "!old:" + a.server_name

        def event(membership: str, target: str) -> dict[str, Any]:
            pdu = {"room_id": room_id, "type": "m.room.member", "state_key": target, "sender": a.uid("alice"),
                   "content": {"membership": membership}, "origin": a.server_name, "origin_server_ts": 1, "depth": 5,
                   "prev_events": [], "auth_events": [], "event_id": f"${membership}{len(target)}:{a.server_name}"}
            return add_hashes_and_signatures(version, pdu, a.server_name, key)

        for body in (event("join", b.uid("bob")), event("invite", a.uid("carol")), [1, 2]):
            event_id = body["event_id"] if isinstance(body, dict) else "$x:" + a.server_name
            with self.assertRaises(Exception) as caught:
                await client.put_json(b.server_name, f"/_matrix/federation/v1/invite/{quote(room_id)}/{quote(event_id)}", body)
            expected = "M_INVALID_PARAM" if isinstance(body, dict) else "M_BAD_JSON"
            self.assertEqual((caught.exception.code, caught.exception.errcode), (400, expected), body)
        self.assertIsNone(await b.rooms.store.get_membership(room_id, b.uid("bob")))

        bob = await b.register("bob")
        resp = await b.request("POST", "/_matrix/client/v3/createRoom", {"room_version": "10"}, token=bob)
        modern = resp.json["room_id"]
        body = event("invite", b.uid("bob"))
        with self.assertRaises(Exception) as caught:
            await client.put_json(b.server_name, f"/_matrix/federation/v1/invite/{quote(modern)}/{quote(body['event_id'])}", body)
        self.assertEqual((caught.exception.code, caught.exception.errcode), (400, "M_INCOMPATIBLE_ROOM_VERSION"))
