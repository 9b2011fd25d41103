"""Smoke test while building."""
from tests.integration.rooms.base import RoomsTestCase


class Smoke(RoomsTestCase):
    async def test_create_and_send(self) -> None:
        """createRoom then send works."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice, name="Hello", topic="t")
        resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
        self.assertEqual(resp.code, 200, resp.body)
        resp2 = await self.send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
        self.assertEqual(resp2.json["event_id"], resp.json["event_id"])
        state = await self.get(alice, f"/rooms/{room_id}/state")
        self.assertEqual(state.code, 200, state.body)
        msgs = await self.get(alice, f"/rooms/{room_id}/messages?dir=b&limit=3")
        self.assertEqual(msgs.code, 200, msgs.body)
        print(msgs.json)
