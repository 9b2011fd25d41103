"""The deprecated /initialSync, /events and /rooms/{roomId}/initialSync."""

from __future__ import annotations

from tests.integration.directory.base import DirectoryTestCase


class LegacySyncTest(DirectoryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.alice = await self.make_user("alice")
        self.bob = await self.make_user("bob")
        self.room = await self.create_room(self.alice, visibility="public", name="Legacy")
        self.first = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "one"})

    async def test_initial_sync_then_events(self) -> None:
        """initialSync lists rooms with messages and state; /events continues from its end token."""
        invite_room = await self.create_room(self.bob, invite=[self.uid("alice")])
        resp = await self.get(self.alice, "/initialSync?limit=2")
        self.assertEqual(resp.code, 200, resp.body)
        rooms = {r["room_id"]: r for r in resp.json["rooms"]}
        joined = rooms[self.room]
        self.assertEqual(joined["membership"], "join")
        self.assertEqual(joined["visibility"], "public")
        self.assertEqual(joined["messages"]["chunk"][-1]["event_id"], self.first)
        self.assertLessEqual(len(joined["messages"]["chunk"]), 2)
        self.assertEqual(joined["messages"]["chunk"][-1]["room_id"], self.room)
        names = [e for e in joined["state"] if e["type"] == "m.room.name"]
        self.assertEqual(names[0]["content"], {"name": "Legacy"})
        self.assertEqual(rooms[invite_room]["membership"], "invite")
        self.assertEqual(rooms[invite_room]["invite"]["sender"], self.uid("bob"))

        second = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "two"})
        events = await self.get(self.alice, f"/events?from={resp.json['end']}&timeout=0")
        self.assertEqual(events.code, 200, events.body)
        self.assertEqual([e["event_id"] for e in events.json["chunk"]], [second])
        self.assertEqual(events.json["start"], resp.json["end"])
        again = await self.get(self.alice, f"/events?from={events.json['end']}&timeout=0")
        self.assertEqual(again.json["chunk"], [])

    async def test_room_initial_sync(self) -> None:
        """A room's initialSync gives chronological messages, state and membership; outsiders get 403."""
        second = await self.send_ok(self.alice, self.room, {"msgtype": "m.text", "body": "two"})
        resp = await self.get(self.alice, f"/rooms/{self.room}/initialSync?limit=2")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([e["event_id"] for e in resp.json["messages"]["chunk"]], [self.first, second])
        self.assertEqual(resp.json["membership"], "join")
        self.assertEqual(resp.json["visibility"], "public")
        self.assertIn("m.room.create", [e["type"] for e in resp.json["state"]])
        older = await self.get(self.alice, f"/rooms/{self.room}/messages?dir=b&from={resp.json['messages']['start']}")
        self.assertNotIn(self.first, [e["event_id"] for e in older.json["chunk"]])
        self.assertError(await self.get(self.bob, f"/rooms/{self.room}/initialSync"), 403, "M_FORBIDDEN")
        self.assertError(await self.get(self.alice, "/rooms/bad/initialSync"), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(self.alice, "/initialSync?archived=maybe"), 400, "M_INVALID_PARAM")
        self.assertError(await self.get(self.alice, "/events?from=garbage"), 400, "M_INVALID_PARAM")
        self.assertEqual((await self.request("GET", "/_matrix/client/v3/initialSync")).code, 401)
