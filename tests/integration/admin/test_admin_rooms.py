"""The Synapse-compatible room admin API (``/_synapse/admin/v1/rooms...``) and joined_rooms."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from tests.integration.rooms.base import RoomsTestCase

V1 = "/_synapse/admin/v1"


class AdminRoomsTestCase(RoomsTestCase):
    """Rooms, with the admin room endpoints mounted as the admin role mounts them."""

    async def extra_setup(self) -> None:
        from homeserver.handlers.admin import AdminRooms
        from homeserver.rest.admin.rooms import register
        from workers.rooms import part_on_deactivation

        register(self.resource, AdminRooms(self.api.admin_store, self.rooms_api.store, self.rooms_api.loader),
                 self.api.authenticator)
        self.parter = part_on_deactivation(self.api, self.rooms_api, self.commands)
        self.admin = await self.make_user("admin")
        await self.api.account_store.set_admin(self.uid("admin"), True)
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")

    async def aget(self, path: str, token: Any = None) -> Any:
        return await self.request("GET", V1 + path, token=token or self.admin)

    async def assertRefusesNonAdmins(self, path: str) -> None:
        self.assertError(await self.request("GET", V1 + path), 401, "M_MISSING_TOKEN")
        self.assertError(await self.request("GET", V1 + path, token="est_nope"), 401, "M_UNKNOWN_TOKEN")
        self.assertError(await self.request("GET", V1 + path, token=self.alice), 403, "M_FORBIDDEN")


class RoomListTests(AdminRoomsTestCase):
    async def test_list_fields_order_and_pages(self) -> None:
        """Synapse's fields; ordered by name or size; offset pagination with next_batch/prev_batch."""
        big = await self.create_room(self.alice, name="Beta", preset="public_chat", room_alias_name="beta")
        self.assertEqual((await self.join(self.bob, big)).code, 200)
        small = await self.create_room(self.bob, name="Alpha")
        enc = await self.create_room(self.bob, name="Gamma", initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        resp = await self.aget("/rooms")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["total_rooms"], 3)
        self.assertEqual(resp.json["offset"], 0)
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [small, big, enc])
        beta = resp.json["rooms"][1]
        self.assertEqual(set(beta), {
            "room_id", "name", "canonical_alias", "joined_members", "joined_local_members", "version", "creator",
            "encryption", "federatable", "public", "join_rules", "guest_access", "history_visibility",
            "state_events", "room_type"})
        self.assertEqual((beta["name"], beta["canonical_alias"], beta["joined_members"], beta["joined_local_members"],
                          beta["creator"], beta["join_rules"], beta["federatable"], beta["encryption"]),
                         ("Beta", "#beta:test.local", 2, 2, self.uid("alice"), "public", True, None))
        self.assertGreater(beta["state_events"], 4)
        self.assertEqual(resp.json["rooms"][2]["encryption"], "m.megolm.v1.aes-sha2")

        resp = await self.aget("/rooms?order_by=joined_members")
        self.assertEqual(resp.json["rooms"][0]["room_id"], big)
        resp = await self.aget("/rooms?dir=b")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [enc, big, small])

        resp = await self.aget("/rooms?limit=2")
        self.assertEqual(([r["room_id"] for r in resp.json["rooms"]], resp.json["next_batch"]), ([small, big], 2))
        self.assertNotIn("prev_batch", resp.json)
        resp = await self.aget("/rooms?limit=2&from=2")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [enc])
        self.assertNotIn("next_batch", resp.json)
        self.assertEqual((resp.json["offset"], resp.json["prev_batch"]), (2, 0))

    async def test_search(self) -> None:
        """``search_term`` matches the name, the canonical alias, or the exact room id."""
        lounge = await self.create_room(self.alice, name="The Lounge")
        other = await self.create_room(self.alice, name="Office", room_alias_name="work")
        resp = await self.aget("/rooms?search_term=lounge")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [lounge])
        self.assertEqual(resp.json["total_rooms"], 1)
        resp = await self.aget("/rooms?" + urlencode({"search_term": "#work"}))
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [other])
        resp = await self.aget("/rooms?" + urlencode({"search_term": other}))
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [other])
        resp = await self.aget("/rooms?search_term=" + quote("%"))
        self.assertEqual(resp.json["rooms"], [])

    async def test_empty_rooms(self) -> None:
        """``empty_rooms=true`` lists the rooms nobody is joined to, ``false`` the others."""
        kept = await self.create_room(self.alice)
        left = await self.create_room(self.alice)
        self.assertEqual((await self.post(self.alice, f"/rooms/{left}/leave")).code, 200)
        resp = await self.aget("/rooms?empty_rooms=true")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [left])
        resp = await self.aget("/rooms?empty_rooms=false")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [kept])

    async def test_every_order(self) -> None:
        """Every ``order_by`` Synapse documents works both ways and returns every room once."""
        from homeserver.handlers.admin import ROOM_ORDERS

        rooms = {await self.create_room(self.alice, name=n) for n in ("A", "B")}
        for order in sorted(ROOM_ORDERS):
            for direction in ("f", "b"):
                resp = await self.aget("/rooms?" + urlencode({"order_by": order, "dir": direction}))
                self.assertEqual(resp.code, 200, (order, resp.body))
                self.assertEqual({r["room_id"] for r in resp.json["rooms"]}, rooms)

    async def test_bad_query(self) -> None:
        for query in ({"limit": "-1"}, {"from": "x"}, {"order_by": "room_id; DROP TABLE rooms"}, {"dir": "x"},
                      {"empty_rooms": "yes"}):
            self.assertError(await self.aget("/rooms?" + urlencode(query)), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("/rooms")


class RoomDetailsTests(AdminRoomsTestCase):
    async def test_details_members_state(self) -> None:
        """Details with topic and local devices; joined members; the full current state."""
        room = await self.create_room(self.alice, name="Lounge", topic="chat here", preset="public_chat")
        self.assertEqual((await self.join(self.bob, room)).code, 200)
        resp = await self.aget(f"/rooms/{room}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["room_id"], resp.json["name"], resp.json["topic"], resp.json["joined_members"],
                          resp.json["joined_local_devices"], resp.json["public"]),
                         (room, "Lounge", "chat here", 2, 2, False))
        resp = await self.aget(f"/rooms/{room}/members")
        self.assertEqual((resp.code, resp.json), (200, {"members": [self.uid("alice"), self.uid("bob")], "total": 2}))
        resp = await self.aget(f"/rooms/{room}/state")
        self.assertEqual(resp.code, 200, resp.body)
        keys = {(e["type"], e["state_key"]) for e in resp.json["state"]}
        self.assertTrue({("m.room.create", ""), ("m.room.name", ""), ("m.room.topic", ""),
                         ("m.room.member", self.uid("alice")), ("m.room.member", self.uid("bob"))} <= keys)
        self.assertTrue(all("event_id" in e and "content" in e for e in resp.json["state"]))

    async def test_refusals(self) -> None:
        """Unknown rooms are 404, malformed ids 400; non-admins are refused (even room members)."""
        room = await self.create_room(self.alice)
        for suffix in ("", "/members", "/state"):
            self.assertError(await self.aget(f"/rooms/!nope:test.local{suffix}"), 404, "M_NOT_FOUND")
            self.assertError(await self.aget(f"/rooms/nope{suffix}"), 400, "M_INVALID_PARAM")
            await self.assertRefusesNonAdmins(f"/rooms/{room}{suffix}")


class JoinedRoomsTests(AdminRoomsTestCase):
    async def test_joined_rooms(self) -> None:
        """The rooms a user is joined to (not left ones)."""
        first = await self.create_room(self.alice)
        second = await self.create_room(self.bob, preset="public_chat")
        self.assertEqual((await self.join(self.alice, second)).code, 200)
        third = await self.create_room(self.alice)
        self.assertEqual((await self.post(self.alice, f"/rooms/{third}/leave")).code, 200)
        resp = await self.aget(f"/users/{quote(self.uid('alice'))}/joined_rooms")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"joined_rooms": sorted([first, second]), "total": 2})


class DeactivationPartsRoomsTests(AdminRoomsTestCase):
    async def test_deactivated_user_leaves_rooms_and_rejects_invites(self) -> None:
        """Admin deactivation: the user leaves joined rooms (others see it) and invites are rejected."""
        from twisted.internet import reactor

        from tests.utils.wait import wait_until

        own = await self.create_room(self.alice)
        shared = await self.create_room(self.bob, preset="public_chat")
        self.assertEqual((await self.join(self.alice, shared)).code, 200)
        invited = await self.create_room(self.bob)
        resp = await self.post(self.bob, f"/rooms/{invited}/invite", {"user_id": self.uid("alice")})
        self.assertEqual(resp.code, 200, resp.body)

        resp = await self.request("POST", V1 + "/deactivate/" + quote(self.uid("alice")), {}, token=self.admin)
        self.assertEqual(resp.code, 200, resp.body)
        await wait_until(reactor, lambda: not self.parter.pending, what="parting done")
        resp = await self.aget(f"/users/{quote(self.uid('alice'))}/joined_rooms")
        self.assertEqual(resp.json, {"joined_rooms": [], "total": 0})
        self.assertEqual((await self.aget(f"/rooms/{shared}/members")).json["members"], [self.uid("bob")])
        self.assertEqual((await self.aget(f"/rooms/{own}")).json["joined_members"], 0)
        resp = await self.get(self.bob, f"/rooms/{invited}/state/m.room.member/{quote(self.uid('alice'))}")
        self.assertEqual((resp.code, resp.json["membership"]), (200, "leave"))


class EventReportTests(AdminRoomsTestCase):
    async def test_list_get_delete(self) -> None:
        """Reports of events: newest first, filters, details with the event, deletion; room reports are not listed."""
        from storage.stores.directory import DirectoryStore

        store = DirectoryStore(self.db)
        room = await self.create_room(self.alice, name="Lounge")
        sent = await self.send(self.alice, room, {"msgtype": "m.text", "body": "spam"}, "t1")
        event_id = sent.json["event_id"]
        first = await store.add_room_report(room, event_id, self.uid("bob"), "spam", -100, 1000)
        second = await store.add_room_report(room, event_id, self.uid("admin"), "rude", None, 2000)
        await store.add_room_report(room, None, self.uid("bob"), "whole room", None, 3000)

        resp = await self.aget("/event_reports")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["total"], [r["id"] for r in resp.json["event_reports"]]), (2, [second, first]))
        report = resp.json["event_reports"][1]
        self.assertEqual((report["room_id"], report["event_id"], report["user_id"], report["sender"], report["reason"],
                          report["score"], report["name"], report["received_ts"]),
                         (room, event_id, self.uid("bob"), self.uid("alice"), "spam", -100, "Lounge", 1000))
        resp = await self.aget("/event_reports?dir=f&limit=1")
        self.assertEqual(([r["id"] for r in resp.json["event_reports"]], resp.json["next_token"]), ([first], 1))
        resp = await self.aget("/event_reports?user_id=bob")
        self.assertEqual([r["id"] for r in resp.json["event_reports"]], [first])

        resp = await self.aget(f"/event_reports/{first}")
        self.assertEqual(resp.code, 200, resp.body)
        # The reported event as stored (the PDU; room versions 3+ carry no event_id in it).
        self.assertEqual((resp.json["event_json"]["type"], resp.json["event_json"]["content"]["body"]),
                         ("m.room.message", "spam"))
        resp = await self.request("DELETE", V1 + f"/event_reports/{first}", token=self.admin)
        self.assertEqual((resp.code, resp.json), (200, {}))
        self.assertError(await self.aget(f"/event_reports/{first}"), 404, "M_NOT_FOUND")
        self.assertError(await self.request("DELETE", V1 + f"/event_reports/{first}", token=self.admin), 404, "M_NOT_FOUND")
        self.assertEqual((await self.aget("/event_reports")).json["total"], 1)

    async def test_refusals(self) -> None:
        self.assertError(await self.aget("/event_reports/abc"), 400, "M_INVALID_PARAM")
        self.assertError(await self.aget("/event_reports/-1"), 400, "M_INVALID_PARAM")
        for query in ("limit=x", "from=-2", "dir=up", "limit=0"):
            self.assertError(await self.aget("/event_reports?" + query), 400, "M_INVALID_PARAM")
        await self.assertRefusesNonAdmins("/event_reports")
        await self.assertRefusesNonAdmins("/event_reports/1")
        self.assertError(await self.request("DELETE", V1 + "/event_reports/1", token=self.alice), 403, "M_FORBIDDEN")
