"""/sync against a real database and a MemoryBus: initial, incremental, long-poll, sections, filters."""

from __future__ import annotations

import json
from urllib.parse import quote

from twisted.internet import defer, reactor, task

from tests.integration.rooms.base import RoomsTestCase
from tests.utils.client import wait_for_response
from tests.utils.http import make_request


def timeline_bodies(room: dict) -> list:
    """The bodies of the message events of a room's timeline."""
    return [e["content"].get("body") for e in room["timeline"]["events"] if e["type"] == "m.room.message"]


class SyncTests(RoomsTestCase):
    """/sync on a MemoryBus."""
    async def test_initial_then_incremental(self) -> None:
        """Initial sync shows the room with its state; an incremental sync returns exactly the new events once."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice, name="Room")
        first = await self.sync(alice)
        room = first["rooms"]["join"][room_id]
        types = {e["type"] for e in room["state"]["events"]} | {e["type"] for e in room["timeline"]["events"]}
        self.assertIn("m.room.create", types)
        self.assertIn("m.room.name", types)
        self.assertEqual(room["summary"]["m.joined_member_count"], 1)
        resp = await self.send(alice, room_id, {"msgtype": "m.text", "body": "one"}, "t1")
        self.assertEqual(resp.code, 200)
        second = await self.sync(alice, since=first["next_batch"])
        self.assertEqual(timeline_bodies(second["rooms"]["join"][room_id]), ["one"])
        self.assertEqual(second["rooms"]["join"][room_id]["timeline"]["events"][0]["unsigned"]["transaction_id"], "t1")
        third = await self.sync(alice, since=second["next_batch"])
        self.assertEqual(third["rooms"]["join"], {})

    async def test_long_poll_wakes_on_new_event(self) -> None:
        """A long-polling sync returns as soon as an event arrives in one of the user's rooms."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        token = (await self.sync(alice))["next_batch"]
        pending = make_request(self.site, "GET", f"/_matrix/client/v3/sync?since={token}&timeout=20000", access_token=alice)
        for _ in range(20):
            await defer.succeed(None)
        self.assertFalse(pending.done)
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "wake"}, "w1")
        resp = await wait_for_response(pending, timeout=10)
        self.assertEqual(resp.code, 200)
        self.assertEqual(timeline_bodies(resp.json["rooms"]["join"][room_id]), ["wake"])

    async def test_min_interval_spaces_a_clients_answers(self) -> None:
        """With ``sync.min_interval_ms``, a long-poll continuing from an answer is not answered
        before the interval has passed since that answer, even when woken at once."""
        self.sync_api.handler._min_interval = 0.3
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        first = await self.sync(alice)
        answered = reactor.seconds()
        pending = defer.ensureDeferred(self.sync(alice, since=first["next_batch"], timeout=10000))
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "now"}, "mi1")
        body = await pending
        self.assertGreaterEqual(reactor.seconds() - answered, 0.3)
        self.assertEqual([e["content"]["body"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]], ["now"])
        # A token answered elsewhere (or long ago) is not held.
        self.sync_api.handler._answered.clear()
        started = reactor.seconds()
        pending = defer.ensureDeferred(self.sync(alice, since=body["next_batch"], timeout=10000))
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "again"}, "mi2")
        await pending
        self.assertLess(reactor.seconds() - started, 5)

    async def test_long_poll_times_out_empty(self) -> None:
        """With nothing new, a long-poll answers after its timeout with the same kind of token."""
        alice = await self.make_user("alice")
        await self.create_room(alice)
        token = (await self.sync(alice))["next_batch"]
        body = await self.sync(alice, since=token, timeout=200)
        self.assertEqual(body["rooms"]["join"], {})
        self.assertTrue(body["next_batch"].startswith("s1_"))

    async def test_invite_join_leave_sections(self) -> None:
        """Invites come with stripped state; joins move the room to join; leaves appear under leave."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, name="Secret")
        bob_token = (await self.sync(bob))["next_batch"]
        resp = await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")})
        self.assertEqual(resp.code, 200, resp.body)
        # Long-poll: alice's invite reaches bob's sync process over the bus
        # (read-your-writes covers bob's own writes, not others').
        s1 = await self.sync(bob, since=bob_token, timeout=10000)
        invite = s1["rooms"]["invite"][room_id]["invite_state"]["events"]
        self.assertIn(("m.room.name", "Secret"), [(e["type"], e["content"].get("name")) for e in invite])
        self.assertIn(("m.room.member", "invite"), [(e["type"], e["content"].get("membership")) for e in invite])
        resp = await self.join(bob, room_id)
        self.assertEqual(resp.code, 200, resp.body)
        s2 = await self.sync(bob, since=s1["next_batch"])
        joined = s2["rooms"]["join"][room_id]
        seen_types = {e["type"] for e in joined["state"]["events"] + joined["timeline"]["events"]}
        self.assertIn("m.room.create", seen_types)
        self.assertEqual(joined["summary"]["m.joined_member_count"], 2)
        resp = await self.post(bob, f"/rooms/{room_id}/leave")
        self.assertEqual(resp.code, 200, resp.body)
        s3 = await self.sync(bob, since=s2["next_batch"])
        self.assertIn(room_id, s3["rooms"]["leave"])
        left = s3["rooms"]["leave"][room_id]["timeline"]["events"]
        self.assertEqual(left[-1]["content"]["membership"], "leave")
        # Alice's next message is not sent to bob any more.
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "after"}, "a1")
        s4 = await self.sync(bob, since=s3["next_batch"])
        self.assertEqual(s4["rooms"]["join"], {})
        self.assertEqual(s4["rooms"]["leave"], {})
        # include_leave shows archived rooms in an initial sync.
        archived = await self.sync(bob, filter=json.dumps({"room": {"include_leave": True}}))
        self.assertIn(room_id, archived["rooms"]["leave"])
        plain = await self.sync(bob)
        self.assertNotIn(room_id, plain["rooms"]["leave"])

    async def test_left_and_forgotten_between_syncs(self) -> None:
        """A room left and forgotten between two syncs is not under leave, though the syncing
        process held the user's memberships from the sync before."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        self.assertEqual((await self.join(bob, room_id)).code, 200)
        s1 = await self.sync(bob)
        s2 = await self.sync(bob, since=s1["next_batch"])  # incremental: memberships now held
        self.assertEqual((await self.post(bob, f"/rooms/{room_id}/leave")).code, 200)
        self.assertEqual((await self.post(bob, f"/rooms/{room_id}/forget")).code, 200)
        s3 = await self.sync(bob, since=s2["next_batch"])
        self.assertNotIn(room_id, s3["rooms"]["leave"])
        self.assertNotIn(room_id, s3["rooms"]["join"])
        # And a fresh invite reaches the same user's next incremental sync.
        other = await self.create_room(alice)
        self.assertEqual((await self.post(alice, f"/rooms/{other}/invite", {"user_id": self.uid("bob")})).code, 200)
        s4 = await self.sync(bob, since=s3["next_batch"], timeout=10000)
        self.assertIn(other, s4["rooms"]["invite"])

    async def test_limited_timeline_and_pagination(self) -> None:
        """Gappy syncs are limited with a prev_batch that /messages continues from, and carry a state delta."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        token = (await self.sync(alice))["next_batch"]
        await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/", {"topic": "new"}, token=alice)
        for i in range(8):
            await self.send(alice, room_id, {"msgtype": "m.text", "body": f"m{i}"}, f"x{i}")
        body = await self.sync(alice, since=token, filter=json.dumps({"room": {"timeline": {"limit": 3}}}))
        room = body["rooms"]["join"][room_id]
        self.assertTrue(room["timeline"]["limited"])
        self.assertEqual(timeline_bodies(room), ["m5", "m6", "m7"])
        self.assertEqual([e["type"] for e in room["state"]["events"]], ["m.room.topic"])
        prev = room["timeline"]["prev_batch"]
        page = await self.get(alice, f"/rooms/{room_id}/messages?dir=b&limit=5&from={quote(prev)}")
        self.assertEqual(page.code, 200, page.body)
        self.assertEqual([e["content"].get("body") for e in page.json["chunk"]], ["m4", "m3", "m2", "m1", "m0"])
        # A sync token also works as a /messages starting point.
        page2 = await self.get(alice, f"/rooms/{room_id}/messages?dir=b&limit=2&from={quote(body['next_batch'])}")
        self.assertEqual([e["content"].get("body") for e in page2.json["chunk"]], ["m7", "m6"])

    async def test_filters_inline_and_stored(self) -> None:
        """Inline and stored filters restrict timeline types; lazy loading keeps only senders' members."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, "t1")
        await self.send(alice, room_id, {"k": 1}, "t2", etype="org.example.custom")
        inline = await self.sync(alice, filter=json.dumps({"room": {"timeline": {"types": ["org.example.*"]}}}))
        self.assertEqual([e["type"] for e in inline["rooms"]["join"][room_id]["timeline"]["events"]], ["org.example.custom"])
        resp = await self.post(alice, f"/user/{quote(self.uid('alice'))}/filter",
                               {"room": {"timeline": {"not_types": ["org.example.custom"]}, "state": {"lazy_load_members": True}}})
        self.assertEqual(resp.code, 200, resp.body)
        stored = await self.sync(alice, filter=resp.json["filter_id"])
        events = stored["rooms"]["join"][room_id]["timeline"]["events"]
        self.assertNotIn("org.example.custom", [e["type"] for e in events])
        bad = await self.request("GET", "/_matrix/client/v3/sync?filter=999", token=alice)
        self.assertEqual(bad.code, 400)

    async def test_bad_since_token(self) -> None:
        """A since token that does not parse is refused with 400 M_INVALID_PARAM."""
        alice = await self.make_user("alice")
        for token in ("garbage", "s1_e0_r0_t0_a0", "s1_e0.0.0.0_r0.0_t0.0_a!"):
            resp = await self.request("GET", f"/_matrix/client/v3/sync?since={quote(token)}", token=alice)
            self.assertError(resp, 400, "M_INVALID_PARAM")
        resp = await self.request("GET", "/_matrix/client/v3/sync")
        self.assertError(resp, 401, "M_MISSING_TOKEN")

    async def test_typing_and_receipts(self) -> None:
        """Typing and receipts reach the other member through the ephemeral section; private receipts stay private."""
        alice = await self.make_user("alice")
        bob = await self.make_user("bob")
        room_id = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room_id)
        token = (await self.sync(bob))["next_batch"]
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{quote(self.uid('alice'))}",
                                  {"typing": True, "timeout": 30000}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        sent = await self.send(alice, room_id, {"msgtype": "m.text", "body": "read me"}, "r1")
        event_id = sent.json["event_id"]
        resp = await self.post(alice, f"/rooms/{room_id}/receipt/m.read/{quote(event_id)}", {})
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.post(alice, f"/rooms/{room_id}/receipt/m.read.private/{quote(event_id)}", {})
        self.assertEqual(resp.code, 200, resp.body)
        seen: dict = {}
        for _ in range(50):
            body = await self.sync(bob, since=token, timeout=500)
            for e in body["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", []):
                seen.setdefault(e["type"], []).append(e["content"])
            token = body["next_batch"]
            if "m.typing" in seen and "m.receipt" in seen:
                break
        self.assertEqual(seen["m.typing"][0]["user_ids"], [self.uid("alice")])
        receipts = seen["m.receipt"][0][event_id]
        self.assertIn(self.uid("alice"), receipts["m.read"])
        self.assertNotIn("m.read.private", receipts)
        # A user cannot set someone else's typing, nor type in a room they are not in.
        carol = await self.make_user("carol")
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{quote(self.uid('alice'))}",
                                  {"typing": True}, token=carol)
        self.assertError(resp, 403, "M_FORBIDDEN")
        resp = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{quote(self.uid('carol'))}",
                                  {"typing": True}, token=carol)
        self.assertError(resp, 403, "M_FORBIDDEN")

    async def test_read_markers_and_threaded_receipts(self) -> None:
        """read_markers sets m.fully_read (room account data) and m.read; threaded receipts keep their thread."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        token = (await self.sync(alice))["next_batch"]
        e1 = (await self.send(alice, room_id, {"msgtype": "m.text", "body": "1"}, "1")).json["event_id"]
        resp = await self.post(alice, f"/rooms/{room_id}/read_markers", {"m.fully_read": e1, "m.read": e1})
        self.assertEqual(resp.code, 200, resp.body)
        resp = await self.post(alice, f"/rooms/{room_id}/receipt/m.read/{quote(e1)}", {"thread_id": "$root"})
        self.assertEqual(resp.code, 200, resp.body)
        # Receipts reach the sync side through the bus (read-your-writes
        # covers events only), so the threaded receipt may come one sync
        # after the unthreaded one: poll with a deadline.
        deadline = reactor.seconds() + 10
        while True:
            body = await self.sync(alice, since=token, timeout=1000)
            room = body["rooms"]["join"].get(room_id, {})
            receipts = [e["content"] for e in room.get("ephemeral", {}).get("events", []) if e["type"] == "m.receipt"]
            if receipts and receipts[-1][e1]["m.read"][self.uid("alice")].get("thread_id") == "$root":
                break
            self.assertLess(reactor.seconds(), deadline, f"no threaded receipt in {body}")
            await task.deferLater(reactor, 0.05, lambda: None)
        full = await self.sync(alice, since=token)
        room = full["rooms"]["join"][room_id]
        self.assertEqual(room["account_data"]["events"], [{"type": "m.fully_read", "content": {"event_id": e1}}])
        for path, body_, code, errcode in [
            (f"/rooms/{room_id}/receipt/m.bogus/{quote(e1)}", {}, 400, "M_INVALID_PARAM"),
            (f"/rooms/{room_id}/receipt/m.read/{quote('$unknown')}", {}, 404, "M_NOT_FOUND"),
            (f"/rooms/{room_id}/receipt/m.read/{quote(e1)}", {"thread_id": 5}, 400, "M_BAD_JSON"),
            (f"/rooms/{room_id}/read_markers", {"m.fully_read": 5}, 400, "M_BAD_JSON"),
        ]:
            self.assertError(await self.post(alice, path, body_), code, errcode)
        bob = await self.make_user("bob")
        self.assertError(await self.post(bob, f"/rooms/{room_id}/receipt/m.read/{quote(e1)}", {}), 403, "M_FORBIDDEN")

    async def test_use_state_after(self) -> None:
        """With use_state_after, state_after holds the state up to the end of the timeline and state is omitted."""
        alice = await self.make_user("alice")
        room_id = await self.create_room(alice, name="First")
        first = await self.sync(alice, use_state_after="true")
        room = first["rooms"]["join"][room_id]
        self.assertNotIn("state", room)
        names = [e["content"]["name"] for e in room["state_after"]["events"] if e["type"] == "m.room.name"]
        self.assertEqual(names, ["First"])
        await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/", {"name": "Second"}, token=alice)
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "hi"}, "1")
        second = await self.sync(alice, since=first["next_batch"], use_state_after="true")
        room = second["rooms"]["join"][room_id]
        self.assertEqual([(e["type"], e["content"].get("name")) for e in room["state_after"]["events"]],
                         [("m.room.name", "Second")])
        self.assertEqual(timeline_bodies(room), ["hi"])
        plain = await self.sync(alice, since=first["next_batch"])
        self.assertEqual(plain["rooms"]["join"][room_id]["state"]["events"], [])
        self.assertError(await self.request("GET", "/_matrix/client/v3/sync?use_state_after=maybe", token=alice),
                         400, "M_INVALID_PARAM")

    async def test_account_data_from_another_writer_wakes_long_poll(self) -> None:
        """Account data written by another process wakes the long-poll through the account_data stream."""
        from homeserver.sharding import shard_for
        from storage.stores.account_data import AccountDataStore

        alice = await self.make_user("alice")
        token = (await self.sync(alice))["next_batch"]
        pending = make_request(self.site, "GET", f"/_matrix/client/v3/sync?since={token}&timeout=20000", access_token=alice)
        other_writer = AccountDataStore(self.db)  # no in-process observers: only the bus can tell
        position = await other_writer.set_account_data(self.uid("alice"), None, "org.example.settings", {"a": 1})
        shard = shard_for(self.uid("alice"), self.shard_counts["account_data"])
        await self.bus.publish("account_data", shard, position, {"user_id": self.uid("alice"), "stream_id": position})
        resp = await wait_for_response(pending, timeout=10)
        self.assertEqual(resp.json["account_data"]["events"], [{"type": "org.example.settings", "content": {"a": 1}}])


class RedisSyncTests(SyncTests):
    """The sync tests with the bus on real Redis."""

    use_redis = True


class MembershipRaceTests(RoomsTestCase):
    """Membership changes racing the sync token."""
    async def test_membership_changed_after_the_token_being_built(self) -> None:
        """Events up to the token are returned even when the user's membership changes just after it."""
        from homeserver.handlers.auth import Requester
        from homeserver.handlers.rooms.filters import SyncFilter
        from homeserver.handlers.rooms.tokens import StreamToken

        alice = await self.make_user("alice")
        room_id = await self.create_room(alice)
        since = StreamToken.decode((await self.sync(alice))["next_batch"], self.shard_counts)
        await self.send(alice, room_id, {"msgtype": "m.text", "body": "in range"}, "1")
        middle = StreamToken.decode((await self.sync(alice, since=since.encode()))["next_batch"], self.shard_counts)
        resp = await self.request("PUT", f"/_matrix/client/v3/profile/{quote(self.uid('alice'))}/displayname",
                                  {"displayname": "Alice"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)
        rename = await self.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{quote(self.uid('alice'))}",
                                    {"membership": "join", "displayname": "Alice"}, token=alice)
        self.assertEqual(rename.code, 200, rename.body)
        requester = Requester(self.uid("alice"), None, False, 0, False)
        body, _, _ = await self.sync_api.handler._build(requester, SyncFilter(), since, middle, False)
        self.assertEqual(timeline_bodies(body["rooms"]["join"][room_id]), ["in range"])
        # And a join made after a profile change carries the display name.
        bob = await self.make_user("bob")
        await self.request("PUT", f"/_matrix/client/v3/profile/{quote(self.uid('bob'))}/displayname",
                           {"displayname": "Bobby"}, token=bob)
        await self.post(alice, f"/rooms/{room_id}/invite", {"user_id": self.uid("bob")})
        await self.join(bob, room_id)
        member = await self.get(alice, f"/rooms/{room_id}/state/m.room.member/{quote(self.uid('bob'))}")
        self.assertEqual(member.json, {"membership": "join", "displayname": "Bobby"})
