"""POST /rooms/{roomId}/upgrade against a real database: successes and refusals."""

from __future__ import annotations

from urllib.parse import quote

from tests.integration.rooms.base import RoomsTestCase


class RoomUpgradeTests(RoomsTestCase):
    """Room upgrades."""

    async def _state(self, token: str, room_id: str, etype: str) -> object:
        return await self.get(token, f"/rooms/{room_id}/state/{etype}/")

    async def test_upgrade_moves_room(self) -> None:
        """The new room has the version, predecessor, type, copied state and power levels; the old one a
        tombstone, restricted power levels; aliases and the canonical alias move."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        old = await self.create_room(
            alice, preset="public_chat", room_version="10", name="Old", topic="T", room_alias_name="hall",
            creation_content={"type": "m.space"},
            power_level_content_override={"users": {self.uid("alice"): 100, self.uid("bob"): 60}},
        )
        self.assertEqual((await self.join(bob, old)).code, 200)
        resp = await self.post(alice, f"/rooms/{old}/upgrade", {"new_version": "11"})
        self.assertEqual(resp.code, 200, resp.body)
        new = resp.json["replacement_room"]
        self.assertNotEqual(new, old)

        msgs = await self.get(alice, f"/rooms/{new}/messages?dir=f&limit=1")
        create = msgs.json["chunk"][0]
        self.assertEqual(create["type"], "m.room.create")
        self.assertEqual(create["content"]["room_version"], "11")
        self.assertEqual(create["content"]["type"], "m.space")
        self.assertEqual(create["content"]["predecessor"]["room_id"], old)
        self.assertTrue(create["content"]["predecessor"]["event_id"].startswith("$"))
        self.assertEqual((await self._state(alice, new, "m.room.name")).json, {"name": "Old"})
        self.assertEqual((await self._state(alice, new, "m.room.join_rules")).json["join_rule"], "public")
        self.assertEqual((await self._state(alice, new, "m.room.topic")).json["topic"], "T")
        new_pl = (await self._state(alice, new, "m.room.power_levels")).json
        self.assertEqual(new_pl["users"], {self.uid("alice"): 100, self.uid("bob"): 60})
        self.assertEqual((await self._state(alice, new, "m.room.canonical_alias")).json["alias"], "#hall:test.local")

        tomb = (await self._state(alice, old, "m.room.tombstone")).json
        self.assertEqual(tomb["replacement_room"], new)
        old_pl = (await self._state(alice, old, "m.room.power_levels")).json
        self.assertEqual((old_pl["events_default"], old_pl["invite"]), (50, 50))
        self.assertNotIn("alias", (await self._state(alice, old, "m.room.canonical_alias")).json)
        resolved = await self.request("GET", "/_matrix/client/v1/room_summary/" + quote("#hall:test.local"), token=alice)
        self.assertEqual(resolved.json["room_id"], new)
        # Joining through the moved alias lands in the new room.
        joined = await self.join(bob, quote("#hall:test.local"))
        self.assertEqual(joined.json["room_id"], new)
        # Bob (60) may still talk in the old room (restricted to 50), but not upgrade it (tombstone needs 100).
        resp = await self.send(bob, old, {"msgtype": "m.text", "body": "hi"}, "x1")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((await self.post(bob, f"/rooms/{old}/upgrade", {"new_version": "11"})).code, 403)

    async def test_upgrade_to_v12_drops_creators_from_users(self) -> None:
        """Upgrading to v12: the creator has infinite power and is not in power levels users; additional creators too."""
        alice = await self.make_user("alice")
        await self.make_user("carol")
        old = await self.create_room(alice, preset="private_chat", room_version="11")
        resp = await self.post(alice, f"/rooms/{old}/upgrade",
                               {"new_version": "12", "additional_creators": [self.uid("carol")]})
        self.assertEqual(resp.code, 200, resp.body)
        new = resp.json["replacement_room"]
        msgs = await self.get(alice, f"/rooms/{new}/messages?dir=f&limit=1")
        create = msgs.json["chunk"][0]
        self.assertEqual(create["content"]["additional_creators"], [self.uid("carol")])
        self.assertEqual(create["content"]["predecessor"], {"room_id": old})
        pl = (await self._state(alice, new, "m.room.power_levels")).json
        self.assertNotIn(self.uid("alice"), pl.get("users", {}))
        self.assertNotIn(self.uid("carol"), pl.get("users", {}))

    async def test_refusals(self) -> None:
        """Unknown versions are M_UNSUPPORTED_ROOM_VERSION; outsiders and users below the tombstone level are
        M_FORBIDDEN; a missing new_version is M_BAD_JSON; nothing is created on refusal."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        old = await self.create_room(alice, preset="public_chat", room_version="11")
        resp = await self.post(alice, f"/rooms/{old}/upgrade", {"new_version": "99"})
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_UNSUPPORTED_ROOM_VERSION"))
        resp = await self.post(alice, f"/rooms/{old}/upgrade", {})
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_BAD_JSON"))
        resp = await self.post(bob, f"/rooms/{old}/upgrade", {"new_version": "12"})
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        self.assertEqual((await self.join(bob, old)).code, 200)
        resp = await self.post(bob, f"/rooms/{old}/upgrade", {"new_version": "12"})
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        resp = await self.post(alice, "/rooms/!unknown:test.local/upgrade", {"new_version": "12"})
        self.assertEqual(resp.code, 403, resp.body)
        joined = await self.get(bob, "/joined_rooms")
        self.assertEqual(joined.json["joined_rooms"], [old])
        self.assertEqual(len((await self.get(alice, "/joined_rooms")).json["joined_rooms"]), 1)
        self.assertEqual((await self._state(alice, old, "m.room.tombstone")).code, 404)
