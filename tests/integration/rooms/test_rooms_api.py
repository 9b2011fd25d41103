"""Room endpoints against a real database: successes and refusals."""

from __future__ import annotations

import json
from urllib.parse import quote

from tests.integration.rooms.base import RoomsTestCase

V3 = "/_matrix/client/v3"


class CreateRoomTests(RoomsTestCase):
    """POST /createRoom."""
    async def test_create_room_state_in_spec_order(self) -> None:
        """createRoom sends create, join, power levels, alias, preset, initial_state, name, topic, invites in order."""
        alice = await self.make_user("alice")
        await self.make_user("bob")
        resp = await self.request("POST", V3 + "/createRoom", {
            "preset": "public_chat", "room_alias_name": "pub", "name": "Pub", "topic": "Drinks",
            "initial_state": [{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            "invite": [self.uid("bob")], "power_level_content_override": {"events_default": 10},
            "creation_content": {"m.federate": False},
        }, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        room_id = resp.json["room_id"]
        self.assertEqual(resp.json["room_alias"], "#pub:test.local")
        msgs = await self.get(alice, f"/rooms/{room_id}/messages?dir=f&limit=50")
        order = [(e["type"], e.get("state_key")) for e in msgs.json["chunk"]]
        self.assertEqual(order, [
            ("m.room.create", ""), ("m.room.member", self.uid("alice")), ("m.room.power_levels", ""),
            ("m.room.canonical_alias", ""), ("m.room.join_rules", ""), ("m.room.history_visibility", ""),
            ("m.room.guest_access", ""), ("m.room.encryption", ""), ("m.room.name", ""), ("m.room.topic", ""),
            ("m.room.member", self.uid("bob")),
        ])
        create = msgs.json["chunk"][0]
        self.assertEqual(create["content"]["room_version"], "12")
        self.assertFalse(create["content"]["m.federate"])
        # Room version 12: the room ID is the create event's hash, the creator is not in the power levels.
        self.assertEqual(room_id[1:], create["event_id"][1:])
        pl = await self.get(alice, f"/rooms/{room_id}/state/m.room.power_levels/")
        self.assertEqual(pl.json["events_default"], 10)
        self.assertNotIn(self.uid("alice"), pl.json["users"])
        self.assertEqual(pl.json["events"]["m.room.tombstone"], 150)
        jr = await self.get(alice, f"/rooms/{room_id}/state/m.room.join_rules")
        self.assertEqual(jr.json, {"join_rule": "public"})
        # The alias resolves for joins.
        carol = await self.make_user("carol")
        joined = await self.join(carol, quote("#pub:test.local"))
        self.assertEqual((joined.code, joined.json.get("room_id")), (200, room_id))

    async def test_create_room_versions_and_refusals(self) -> None:
        """Older room versions work (creator in power levels); bad bodies are refused with the right errors."""
        alice = await self.make_user("alice")
        for version in ("1", "3", "10", "11"):
            resp = await self.request("POST", V3 + "/createRoom", {"room_version": version, "name": "v"}, token=alice)
            self.assertEqual(resp.code, 200, (version, resp.body))
            room_id = resp.json["room_id"]
            self.assertTrue(room_id.endswith(":test.local"))
            pl = await self.get(alice, f"/rooms/{room_id}/state/m.room.power_levels/")
            self.assertEqual(pl.json["users"], {self.uid("alice"): 100})
            sent = await self.send(alice, room_id, {"msgtype": "m.text", "body": version}, f"v{version}")
            self.assertEqual(sent.code, 200, sent.body)
        cases = [
            ({"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
            ({"preset": "nope"}, 400, "M_BAD_JSON"),
            ({"visibility": "hidden"}, 400, "M_BAD_JSON"),
            ({"invite": ["not-a-user"]}, 400, "M_INVALID_PARAM"),
            ({"initial_state": [{"type": 1}]}, 400, "M_BAD_JSON"),
            ({"name": 5}, 400, "M_BAD_JSON"),
            ({"room_alias_name": "a:b"}, 400, "M_INVALID_PARAM"),
        ]
        for body, code, errcode in cases:
            resp = await self.request("POST", V3 + "/createRoom", body, token=alice)
            self.assertError(resp, code, errcode)
        resp = await self.request("POST", V3 + "/createRoom", "{not json", token=alice)
        self.assertError(resp, 400, "M_NOT_JSON")
        await self.create_room(alice, room_alias_name="taken")
        resp = await self.request("POST", V3 + "/createRoom", {"room_alias_name": "taken"}, token=alice)
        self.assertError(resp, 400, "M_ROOM_IN_USE")
        resp = await self.request("POST", V3 + "/createRoom", {})
        self.assertError(resp, 401, "M_MISSING_TOKEN")


class MembershipTests(RoomsTestCase):
    """Membership endpoints."""
    async def test_membership_lifecycle_and_power(self) -> None:
        """invite/join/kick/ban/unban/forget with their refusals."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        carol = await self.make_user("carol")
        room_id = await self.create_room(alice)  # private_chat: invite only
        self.assertError(await self.join(bob, room_id), 403, "M_FORBIDDEN")
        self.assertError(await self.join(bob, "!unknown:test.local"), 404, "M_NOT_FOUND")
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")})).code, 200)
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        # bob (power 0) may invite (invite level 0) but not kick or ban.
        self.assertError(await self.post(bob, f"/rooms/{room_id}/kick", {"user_id": self.uid("alice")}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(bob, f"/rooms/{room_id}/ban", {"user_id": self.uid("carol")}), 403, "M_FORBIDDEN")
        # carol is not in the room: cannot send, read, or invite.
        self.assertError(await self.send(carol, room_id, {"body": "x"}, "c1"), 403, "M_FORBIDDEN")
        self.assertError(await self.get(carol, f"/rooms/{room_id}/state"), 403, "M_FORBIDDEN")
        self.assertError(await self.post(carol, f"/rooms/{room_id}/invite", {"user_id": self.uid("carol")}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(alice, f"/rooms/{room_id}/kick", {"user_id": self.uid("carol")}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(alice, f"/rooms/{room_id}/kick", {}), 400, "M_BAD_JSON")
        # Kick, then ban: bob can neither rejoin nor be invited; unban lets him be invited again.
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/kick", {"user_id": self.uid("bob"), "reason": "bye"})).code, 200)
        members = await self.get(alice, f"/rooms/{room_id}/members?membership=leave")
        self.assertEqual([(m["state_key"], m["content"].get("reason")) for m in members.json["chunk"]], [(self.uid("bob"), "bye")])
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/ban", {"user_id": self.uid("bob")})).code, 200)
        self.assertError(await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")}), 403, "M_FORBIDDEN")
        self.assertError(await self.join(bob, room_id), 403, "M_FORBIDDEN")
        self.assertError(await self.post(alice, f"/rooms/{room_id}/unban", {"user_id": self.uid("carol")}), 403, "M_FORBIDDEN")
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/unban", {"user_id": self.uid("bob")})).code, 200)
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")})).code, 200)
        # bob rejects the invite, then forgets the room; forgetting while joined is refused.
        self.assertEqual((await self.post(bob, f"/rooms/{room_id}/leave")).code, 200)
        self.assertEqual((await self.post(bob, f"/rooms/{room_id}/forget")).code, 200)
        self.assertError(await self.post(alice, f"/rooms/{room_id}/forget"), 400, "M_UNKNOWN")
        joined = await self.get(alice, "/joined_rooms")
        self.assertEqual(joined.json["joined_rooms"], [room_id])
        self.assertEqual((await self.get(bob, "/joined_rooms")).json["joined_rooms"], [])
        jm = await self.get(alice, f"/rooms/{room_id}/joined_members")
        self.assertEqual(list(jm.json["joined"]), [self.uid("alice")])


class EventTests(RoomsTestCase):
    """Sending, state, redaction, reads."""
    async def test_send_state_and_idempotency(self) -> None:
        """Transaction IDs are idempotent per device; state is readable; power levels guard state."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room_id)
        a = await self.send(alice, room_id, {"msgtype": "m.text", "body": "x"}, "same")
        b = await self.send(alice, room_id, {"msgtype": "m.text", "body": "x"}, "same")
        self.assertEqual(a.json["event_id"], b.json["event_id"])
        other = await self.send(bob, room_id, {"msgtype": "m.text", "body": "x"}, "same")
        self.assertNotEqual(other.json["event_id"], a.json["event_id"])
        # A second login (another device) gets a new event for the same txn ID.
        second = (await self.login("alice"))["access_token"]
        c = await self.send(second, room_id, {"msgtype": "m.text", "body": "x"}, "same")
        self.assertNotEqual(c.json["event_id"], a.json["event_id"])
        self.assertError(await self.send(alice, room_id, [1], "arr"), 400, "M_BAD_JSON")
        self.assertError(await self.send(alice, room_id, "{", "nj"), 400, "M_NOT_JSON")
        self.assertError(await self.send(alice, "!nope:test.local", {"b": 1}, "n1"), 404, "M_NOT_FOUND")
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/state/m.room.name/", {"name": "N"}, token=bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/state/org.custom/key", {"v": 1}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        got = await self.get(bob, f"/rooms/{room_id}/state/org.custom/key")
        self.assertEqual(got.json, {"v": 1})
        full = await self.get(bob, f"/rooms/{room_id}/state/org.custom/key?format=event")
        self.assertEqual(full.json["event_id"], resp.json["event_id"])
        self.assertError(await self.get(bob, f"/rooms/{room_id}/state/org.custom/missing"), 404, "M_NOT_FOUND")
        ev = await self.get(bob, f"/rooms/{room_id}/event/{quote(a.json['event_id'])}")
        self.assertEqual(ev.json["content"]["body"], "x")
        self.assertError(await self.get(bob, f"/rooms/{room_id}/event/{quote('$missing')}"), 404, "M_NOT_FOUND")

    async def test_redaction(self) -> None:
        """Senders redact their own events; others need the redact level; redacted content is pruned."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room_id)
        a = (await self.send(alice, room_id, {"msgtype": "m.text", "body": "secret"}, "1")).json["event_id"]
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/redact/{quote(a)}/r1", {"reason": "no"}, token=bob)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/redact/{quote(a)}/r1", {"reason": "oops"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        again = await self.request("PUT", V3 + f"/rooms/{room_id}/redact/{quote(a)}/r1", {"reason": "oops"}, token=alice)
        self.assertEqual(again.json["event_id"], resp.json["event_id"])
        ev = await self.get(bob, f"/rooms/{room_id}/event/{quote(a)}")
        self.assertEqual(ev.json["content"], {})
        self.assertEqual(ev.json["unsigned"]["redacted_because"]["event_id"], resp.json["event_id"])
        b = (await self.send(bob, room_id, {"msgtype": "m.text", "body": "rude"}, "2")).json["event_id"]
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/redact/{quote(b)}/r2", {}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

    async def test_history_visibility_and_context(self) -> None:
        """Joined-only history hides earlier events from newcomers; /context returns surroundings."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        resp = await self.request("PUT", V3 + f"/rooms/{room_id}/state/m.room.history_visibility/",
                                  {"history_visibility": "joined"}, token=alice)
        self.assertEqual(resp.code, 200)
        before = (await self.send(alice, room_id, {"msgtype": "m.text", "body": "before"}, "1")).json["event_id"]
        await self.join(bob, room_id)
        mid = (await self.send(alice, room_id, {"msgtype": "m.text", "body": "mid"}, "2")).json["event_id"]
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "after"}, "3")
        self.assertError(await self.get(bob, f"/rooms/{room_id}/event/{quote(before)}"), 404, "M_NOT_FOUND")
        msgs = await self.get(bob, f"/rooms/{room_id}/messages?dir=b&limit=20")
        bodies = [e["content"].get("body") for e in msgs.json["chunk"] if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["after", "mid"])
        ctx = await self.get(alice, f"/rooms/{room_id}/context/{quote(mid)}?limit=2")
        self.assertEqual(ctx.code, 200, ctx.body)
        self.assertEqual(ctx.json["event"]["event_id"], mid)
        self.assertEqual([e["content"].get("body") for e in ctx.json["events_after"]], ["after"])
        self.assertEqual(len(ctx.json["events_before"]), 1)
        self.assertIn("m.room.create", {e["type"] for e in ctx.json["state"]})
        # Filtered, lazy-loaded /messages.
        filt = json.dumps({"types": ["m.room.message"], "lazy_load_members": True})
        msgs = await self.get(alice, f"/rooms/{room_id}/messages?dir=b&limit=2&filter={quote(filt)}")
        self.assertEqual([e["content"]["body"] for e in msgs.json["chunk"]], ["after", "mid"])
        self.assertEqual([e["state_key"] for e in msgs.json["state"]], [self.uid("alice")])
        self.assertIn("end", msgs.json)
        rest = await self.get(alice, f"/rooms/{room_id}/messages?dir=b&limit=5&filter={quote(filt)}&from={quote(msgs.json['end'])}")
        self.assertEqual([e["content"]["body"] for e in rest.json["chunk"]], ["before"])
        self.assertError(await self.get(alice, f"/rooms/{room_id}/messages?dir=x"), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(alice, f"/rooms/{room_id}/messages?from=zzz"), 400, "M_INVALID_PARAM")
        # Left users read up to their leave.
        await self.post(bob, f"/rooms/{room_id}/leave")
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "later"}, "4")
        msgs = await self.get(bob, f"/rooms/{room_id}/messages?dir=b&limit=20")
        self.assertNotIn("later", [e["content"].get("body") for e in msgs.json["chunk"]])


class LimitsAndSnapshotsTests(RoomsTestCase):
    """Size limits, past membership lists, refusals."""
    async def test_size_limit_members_at_and_refusals(self) -> None:
        """Oversized events are 413; /members?at= reads the past; strangers get 403 on member lists."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": "x" * 70000}, "big")
        self.assertError(resp, 413, "M_TOO_LARGE")
        token = (await self.sync(alice))["next_batch"]
        await self.join(bob, room_id)
        now = await self.get(alice, f"/rooms/{room_id}/members")
        self.assertEqual(len(now.json["chunk"]), 2)
        then = await self.get(alice, f"/rooms/{room_id}/members?at={quote(token)}")
        self.assertEqual([m["state_key"] for m in then.json["chunk"]], [self.uid("alice")])
        self.assertError(await self.get(alice, f"/rooms/{room_id}/members?membership=nope"), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(alice, f"/rooms/{room_id}/members?at=bad"), 400, "M_INVALID_PARAM")
        carol = await self.make_user("carol")
        self.assertError(await self.get(carol, f"/rooms/{room_id}/joined_members"), 403, "M_FORBIDDEN")
        self.assertError(await self.get(carol, f"/rooms/{room_id}/members"), 403, "M_FORBIDDEN")
        self.assertError(await self.get(carol, f"/rooms/{room_id}/messages"), 403, "M_FORBIDDEN")
        self.assertError(await self.get(carol, "/rooms/!unknown:test.local/state"), 403, "M_FORBIDDEN")
        # World-readable rooms can be read by anyone.
        await self.request("PUT", V3 + f"/rooms/{room_id}/state/m.room.history_visibility/",
                           {"history_visibility": "world_readable"}, token=alice)
        self.assertEqual((await self.get(carol, f"/rooms/{room_id}/messages")).code, 200)


class KnockTests(RoomsTestCase):
    """POST /knock and the knock section of /sync."""

    async def test_knock_accept_and_refusals(self) -> None:
        """Knocking needs the knock join rule and room v7+; the knock shows in sync; an invite accepts it."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
                                         name="Knock knock")
        private = await self.create_room(alice)
        old = await self.create_room(alice, room_version="6",
                                     initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
        token = (await self.sync(bob))["next_batch"]
        self.assertError(await self.post(bob, f"/knock/{private}", {}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(bob, f"/knock/{old}", {}), 403, "M_FORBIDDEN")
        self.assertError(await self.post(bob, "/knock/!nope:test.local", {}), 404, "M_NOT_FOUND")
        resp = await self.post(bob, f"/knock/{room_id}", {"reason": "let me in"})
        self.assertEqual((resp.code, resp.json.get("room_id")), (200, room_id), resp.body)
        body = await self.sync(bob, since=token)
        knock_state = body["rooms"]["knock"][room_id]["knock_state"]["events"]
        self.assertIn(("m.room.name", "Knock knock"), [(e["type"], e["content"].get("name")) for e in knock_state])
        self.assertIn(("m.room.member", "knock"), [(e["type"], e["content"].get("membership")) for e in knock_state])
        members = await self.get(alice, f"/rooms/{room_id}/members?membership=knock")
        self.assertEqual([m["content"].get("reason") for m in members.json["chunk"]], ["let me in"])
        self.assertEqual((await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")})).code, 200)
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        self.assertError(await self.post(bob, f"/knock/{room_id}", {}), 403, "M_FORBIDDEN")
