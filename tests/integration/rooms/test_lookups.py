"""timestamp_to_event and room summaries against a real database: successes and refusals."""

from __future__ import annotations

from urllib.parse import quote

from tests.integration.rooms.base import RoomsTestCase

V1 = "/_matrix/client/v1"


class TimestampToEventTests(RoomsTestCase):
    """GET /v1/rooms/{roomId}/timestamp_to_event."""

    async def _room_with_messages(self) -> tuple[str, str, list[tuple[str, int]]]:
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice, preset="private_chat")
        sent = []
        for i in range(3):
            self.clock.advance(10)
            resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": f"m{i}"}, f"t{i}")
            self.assertEqual(resp.code, 200, resp.body)
            sent.append((resp.json["event_id"], int(self.clock.seconds() * 1000)))
        return alice, room_id, sent

    async def _lookup(self, token: str, room_id: str, ts: object, direction: str = "f") -> object:
        return await self.request("GET", f"{V1}/rooms/{room_id}/timestamp_to_event?ts={ts}&dir={direction}", token=token)

    async def test_forwards_and_backwards(self) -> None:
        """f finds the first event at or after ts, b the last at or before it, with its timestamp."""
        alice, room_id, sent = await self._room_with_messages()
        (e0, t0), (e1, t1), (e2, t2) = sent
        resp = await self._lookup(alice, room_id, t0 + 1, "f")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {"event_id": e1, "origin_server_ts": t1})
        resp = await self._lookup(alice, room_id, t2 - 1, "b")
        self.assertEqual(resp.json, {"event_id": e1, "origin_server_ts": t1})
        resp = await self._lookup(alice, room_id, t2, "b")
        self.assertEqual(resp.json["event_id"], e2)
        resp = await self._lookup(alice, room_id, t0, "f")
        self.assertEqual(resp.json["event_id"], e0)

    async def test_none_in_direction_is_not_found(self) -> None:
        """Past the last event forwards (or before the first backwards) is 404 M_NOT_FOUND."""
        alice, room_id, sent = await self._room_with_messages()
        resp = await self._lookup(alice, room_id, sent[-1][1] + 1, "f")
        self.assertEqual(resp.code, 404, resp.body)
        self.assertEqual(resp.json["errcode"], "M_NOT_FOUND")
        resp = await self._lookup(alice, room_id, 1, "b")
        self.assertEqual(resp.code, 404, resp.body)

    async def test_outsider_refused(self) -> None:
        """A user who was never in a non-world-readable room gets 403."""
        alice, room_id, sent = await self._room_with_messages()
        eve = await self.make_user("eve")
        resp = await self._lookup(eve, room_id, sent[0][1], "f")
        self.assertEqual(resp.code, 403, resp.body)

    async def test_respects_history_visibility(self) -> None:
        """A member who joined a 'joined'-visibility room after some events cannot find those events."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.history_visibility/",
                                  {"history_visibility": "joined"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.clock.advance(10)
        early = int(self.clock.seconds() * 1000)
        hidden = await self.send(alice, room_id, {"msgtype": "m.text", "body": "before bob"}, "h")
        self.clock.advance(10)
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        self.clock.advance(10)
        shown = await self.send(alice, room_id, {"msgtype": "m.text", "body": "after bob"}, "s")
        resp = await self._lookup(alice, room_id, early, "f")
        self.assertEqual(resp.json["event_id"], hidden.json["event_id"])
        resp = await self._lookup(bob, room_id, early, "f")
        self.assertEqual(resp.code, 200, resp.body)
        # Bob's first visible event is his own join, never alice's earlier message.
        self.assertNotEqual(resp.json["event_id"], hidden.json["event_id"])
        # Backwards from just after the hidden message lands on the room's earlier
        # ('shared' at the time) state, skipping the message.
        resp = await self._lookup(bob, room_id, early + 1, "b")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertNotEqual(resp.json["event_id"], hidden.json["event_id"])
        resp = await self._lookup(alice, room_id, early + 1, "b")
        self.assertEqual(resp.json["event_id"], hidden.json["event_id"])
        resp = await self._lookup(bob, room_id, int(self.clock.seconds() * 1000), "b")
        self.assertEqual(resp.json["event_id"], shown.json["event_id"])

    async def test_bad_parameters(self) -> None:
        """Missing ts or dir is M_MISSING_PARAM; a bad dir or ts is M_INVALID_PARAM."""
        alice, room_id, _ = await self._room_with_messages()
        resp = await self.request("GET", f"{V1}/rooms/{room_id}/timestamp_to_event?dir=f", token=alice)
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_MISSING_PARAM"))
        resp = await self.request("GET", f"{V1}/rooms/{room_id}/timestamp_to_event?ts=1", token=alice)
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_MISSING_PARAM"))
        resp = await self._lookup(alice, room_id, 1, "x")
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INVALID_PARAM"))
        resp = await self._lookup(alice, room_id, "soon", "f")
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INVALID_PARAM"))
        resp = await self.request("GET", f"{V1}/rooms/{room_id}/timestamp_to_event?ts=1&dir=f")
        self.assertEqual(resp.code, 401, resp.body)


class RoomSummaryTests(RoomsTestCase):
    """GET /v1/room_summary/{roomIdOrAlias}."""

    async def test_public_room_summary(self) -> None:
        """A public room's summary carries its state, member count, version, and the requester's membership."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(
            alice, preset="public_chat", name="Cheese", topic="Tasty", room_alias_name="cheese",
            creation_content={"type": "m.space"},
            initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                           {"type": "m.room.avatar", "content": {"url": "mxc://test.local/abc"}}],
        )
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        resp = await self.request("GET", f"{V1}/room_summary/{quote('#cheese:test.local')}", token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json, {
            "room_id": room_id, "name": "Cheese", "topic": "Tasty", "avatar_url": "mxc://test.local/abc",
            "canonical_alias": "#cheese:test.local", "num_joined_members": 2, "world_readable": False,
            "guest_can_join": False, "join_rule": "public", "room_type": "m.space", "room_version": "12",
            "encryption": "m.megolm.v1.aes-sha2", "membership": "join",
        })
        # Unauthenticated: public rooms are open, without a membership.
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertNotIn("membership", resp.json)
        # An outsider with a token sees membership 'leave'.
        eve = await self.make_user("eve")
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}", token=eve)
        self.assertEqual(resp.json["membership"], "leave")

    async def test_private_room_hidden_from_outsiders(self) -> None:
        """A private room is 404 to outsiders and anonymous callers, visible to invitees."""
        alice = await self.make_user("alice")
        eve = await self.make_user("eve")
        await self.make_user("bob")
        room_id = await self.create_room(alice, preset="private_chat", name="Secret", invite=[self.uid("bob")])
        for token in (eve, None):
            resp = await self.request("GET", f"{V1}/room_summary/{room_id}", token=token)
            self.assertEqual(resp.code, 404, resp.body)
            self.assertEqual(resp.json["errcode"], "M_NOT_FOUND")

    async def test_invitee_sees_private_room(self) -> None:
        """An invited user sees a private room's summary with membership 'invite'."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="private_chat", name="Secret", invite=[self.uid("bob")])
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}", token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["name"], resp.json["membership"], resp.json["join_rule"]), ("Secret", "invite", "invite"))

    async def test_restricted_room_open_to_members_of_allowed_room(self) -> None:
        """A restricted room's summary is visible to members of a room in its allow list, lists allowed_room_ids."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        eve = await self.make_user("eve")
        space = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, space)).code, 200)
        room_id = await self.create_room(alice, preset="private_chat", initial_state=[{
            "type": "m.room.join_rules",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
        }])
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}", token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual(resp.json["allowed_room_ids"], [space])
        self.assertEqual(resp.json["membership"], "leave")
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}", token=eve)
        self.assertEqual(resp.code, 404, resp.body)

    async def test_world_readable_private_room_open(self) -> None:
        """An invite-only room with world-readable history is visible to anyone."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice, preset="private_chat", initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
        resp = await self.request("GET", f"{V1}/room_summary/{room_id}")
        self.assertEqual(resp.code, 200, resp.body)
        self.assertTrue(resp.json["world_readable"])

    async def test_unknown_room_and_alias(self) -> None:
        """Unknown room IDs and aliases are 404; a malformed ID is 400; a bad token is 401."""
        alice = await self.make_user("alice")
        for target in ("!nope:test.local", quote("#nope:test.local")):
            resp = await self.request("GET", f"{V1}/room_summary/{target}", token=alice)
            self.assertEqual((resp.code, resp.json["errcode"]), (404, "M_NOT_FOUND"))
        resp = await self.request("GET", f"{V1}/room_summary/nope", token=alice)
        self.assertEqual(resp.code, 400, resp.body)
        resp = await self.request("GET", f"{V1}/room_summary/!nope:test.local", token="bogus")
        self.assertEqual(resp.code, 401, resp.body)
