"""Presence endpoints and /sync set_presence against a real database."""

from __future__ import annotations

from tests.integration.rooms.base import RoomsTestCase

V3 = "/_matrix/client/v3"


class PresenceTests(RoomsTestCase):
    """PUT/GET /presence/{userId}/status."""

    sync_presence = True

    async def extra_setup(self) -> None:
        """Mount the presence endpoints and /sync's presence hook (as RoomsProcess.mount does)."""
        from workers.rooms import register_presence_api

        self.addCleanup(self.ephemeral_api.presence_writer.stop)
        register_presence_api(self.resource, self.ephemeral_api, self.api.authenticator)

    async def _put(self, token: str, user: str, body: dict) -> object:
        return await self.request("PUT", f"{V3}/presence/{user}/status", body, token=token)

    async def test_set_and_get_own_and_room_mates(self) -> None:
        """A user's status is visible to themselves and to users sharing a room; last_active_ago follows the clock."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        resp = await self._put(alice, self.uid("alice"), {"presence": "online", "status_msg": "Lunch"})
        self.assertEqual(resp.code, 200, resp.body)
        self.clock.advance(2)
        resp = await self.get(bob, f"/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["presence"], "online")
        self.assertEqual(resp.json["status_msg"], "Lunch")
        self.assertTrue(resp.json["currently_active"])
        self.assertAlmostEqual(resp.json["last_active_ago"], 2000, delta=5)
        resp = await self._put(alice, self.uid("alice"), {"presence": "unavailable"})
        resp = await self.get(alice, f"/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.json["presence"], "unavailable")
        self.assertNotIn("status_msg", resp.json)

    async def test_refusals(self) -> None:
        """Setting another's presence is 403, bad bodies 400, strangers' presence 403, no token 401."""
        alice = await self.make_user("alice")
        eve = await self.make_user("eve")
        resp = await self._put(eve, self.uid("alice"), {"presence": "online"})
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        resp = await self._put(alice, self.uid("alice"), {"presence": "away"})
        self.assertEqual(resp.code, 400, resp.body)
        resp = await self._put(alice, self.uid("alice"), {"presence": "online", "status_msg": 5})
        self.assertEqual(resp.code, 400, resp.body)
        self.assertEqual((await self._put(alice, self.uid("alice"), {"presence": "online"})).code, 200)
        resp = await self.get(eve, f"/presence/{self.uid('alice')}/status")
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        resp = await self.request("GET", f"{V3}/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.code, 401, resp.body)
        # Never set: one's own presence is offline.
        resp = await self.get(eve, f"/presence/{self.uid('eve')}/status")
        self.assertEqual(resp.json, {"presence": "offline"})

    async def test_sync_set_presence_and_idle_timeout(self) -> None:
        """/sync marks the user online (set_presence=offline does not); the writer's timer makes them unavailable."""
        from homeserver.core.presence import IDLE_TIMEOUT_MS

        alice = await self.make_user("alice")
        await self.sync(alice, set_presence="offline")
        resp = await self.get(alice, f"/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.json["presence"], "offline")
        await self.sync(alice)
        resp = await self.get(alice, f"/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.json["presence"], "online")
        await self.ephemeral_api.presence_writer.check_timeouts()
        self.clock.advance(IDLE_TIMEOUT_MS / 1000)
        await self.ephemeral_api.presence_writer.check_timeouts()
        resp = await self.get(alice, f"/presence/{self.uid('alice')}/status")
        self.assertEqual(resp.json["presence"], "unavailable")


class SyncPresenceTests(RoomsTestCase):
    """presence.events in /sync."""

    sync_presence = True

    async def extra_setup(self) -> None:
        """Mount the presence endpoints; stop the writer's timer at the end."""
        from workers.rooms import register_presence_api

        self.addCleanup(self.ephemeral_api.presence_writer.stop)
        register_presence_api(self.resource, self.ephemeral_api, self.api.authenticator)

    async def test_room_mates_presence_in_sync(self) -> None:
        """Initial and incremental syncs carry the presence of users sharing a room, never of strangers."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        eve = await self.make_user("eve")
        room_id = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        resp = await self.request("PUT", f"{V3}/presence/{self.uid('alice')}/status",
                                  {"presence": "online", "status_msg": "here"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        first = await self.sync(bob, set_presence="offline")
        by_sender = {e["sender"]: e for e in first["presence"]["events"]}
        self.assertEqual(by_sender[self.uid("alice")]["type"], "m.presence")
        self.assertEqual(by_sender[self.uid("alice")]["content"]["status_msg"], "here")
        eve_sync = await self.sync(eve, set_presence="offline")
        self.assertNotIn(self.uid("alice"), [e["sender"] for e in eve_sync["presence"]["events"]])

        # A change wakes bob's long-poll and comes in the incremental sync, once.
        resp = await self.request("PUT", f"{V3}/presence/{self.uid('alice')}/status",
                                  {"presence": "unavailable"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        second = await self.sync(bob, since=first["next_batch"], timeout=5000, set_presence="offline")
        events = [e for e in second["presence"]["events"] if e["sender"] == self.uid("alice")]
        self.assertEqual([e["content"]["presence"] for e in events], ["unavailable"])
        third = await self.sync(bob, since=second["next_batch"], timeout=0, set_presence="offline")
        self.assertEqual(third["presence"]["events"], [])
