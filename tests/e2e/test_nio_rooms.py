"""matrix-nio against a multi-process stack: two users share a room.

Alice creates a room and invites Bob; Bob joins; they exchange messages,
an edit, a thread reply and a reaction, set typing and send receipts. Each
side's /sync (through the router, served by the sync worker) shows exactly
what the other did, in order, once.
"""

import asyncio

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import Stack, layout_three

try:
    import nio
except ImportError:  # pragma: no cover
    nio = None


def as_deferred(coro):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


async def sync_until(client, predicate, timeout=30.0):
    """Sync repeatedly (long-polling) until ``predicate(responses)`` is true."""
    responses = []
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        resp = await client.sync(timeout=3000)
        assert isinstance(resp, nio.SyncResponse), resp
        responses.append(resp)
        if predicate(responses):
            return responses
    raise AssertionError("sync condition not reached in time")


def timeline(responses, room_id):
    out = []
    for r in responses:
        room = r.rooms.join.get(room_id)
        if room is not None:
            out.extend(room.timeline.events)
    return out


class NioRoomTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")

    async def _client(self, stack, name):
        client = nio.AsyncClient(stack.base, name)
        self.clients.append(client)
        resp = await client.register(name, f"password for {name} 1")
        assert isinstance(resp, nio.RegisterResponse), resp
        return client

    @defer.inlineCallbacks
    def test_two_users_converse(self):
        """Invite, join, messages, edit, thread, reaction, typing and receipts reach the other side once, in order."""
        stack = Stack(self, reactor, layout_three(None))
        yield stack.start()
        self.clients = []
        self.addCleanup(lambda: defer.gatherResults([as_deferred(c.close()) for c in self.clients]))
        yield as_deferred(self._scenario(stack))

    async def _scenario(self, stack):
        alice = await self._client(stack, "alice")
        bob = await self._client(stack, "bob")
        await alice.sync(timeout=0)
        await bob.sync(timeout=0)

        created = await alice.room_create(name="Chat", invite=[bob.user_id])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id

        invited = await sync_until(bob, lambda rs: any(room_id in r.rooms.invite for r in rs))
        assert invited
        joined = await bob.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined

        await sync_until(alice, lambda rs: any(
            isinstance(e, nio.RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "join"
            for e in timeline(rs, room_id)))

        bodies = [f"hello {i}" for i in range(5)]
        ids = []
        for body in bodies:
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(sent, nio.RoomSendResponse), sent
            ids.append(sent.event_id)
        edit = await alice.room_send(room_id, "m.room.message", {
            "msgtype": "m.text", "body": "* hello 0 (edited)",
            "m.new_content": {"msgtype": "m.text", "body": "hello 0 (edited)"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": ids[0]}})
        thread = await alice.room_send(room_id, "m.room.message", {
            "msgtype": "m.text", "body": "in a thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": ids[1], "is_falling_back": True, "m.in_reply_to": {"event_id": ids[1]}}})
        reaction = await alice.room_send(room_id, "m.reaction", {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": ids[2], "key": "👍"}})
        for r in (edit, thread, reaction):
            assert isinstance(r, nio.RoomSendResponse), r
        expected = ids + [edit.event_id, thread.event_id, reaction.event_id]

        responses = await sync_until(bob, lambda rs: set(expected) <= {e.event_id for e in timeline(rs, room_id)})
        seen = [e.event_id for e in timeline(responses, room_id) if e.event_id in set(expected)]
        self.assertEqual(seen, expected, "Bob sees Alice's events once, in order")

        # Aggregations: the reaction is a relation of its target, the edit is
        # bundled on the original, the thread summary on the thread root.
        import json as _json
        from urllib.parse import quote

        raw = await bob.send("GET", f"/_matrix/client/v1/rooms/{quote(room_id)}/relations/{quote(ids[2])}/m.annotation",
                             headers={"Authorization": f"Bearer {bob.access_token}"})
        rel = await raw.json()
        self.assertEqual(raw.status, 200, rel)
        self.assertEqual([e["event_id"] for e in rel["chunk"]], [reaction.event_id])
        raw = await bob.send("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(ids[0])}",
                             headers={"Authorization": f"Bearer {bob.access_token}"})
        original = await raw.json()
        self.assertEqual(original["unsigned"]["m.relations"]["m.replace"]["event_id"], edit.event_id)
        raw = await bob.send("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(ids[1])}",
                             headers={"Authorization": f"Bearer {bob.access_token}"})
        root = await raw.json()
        summary = root["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual((summary["count"], summary["latest_event"]["event_id"]), (1, thread.event_id))

        # Typing: Bob types, Alice sees it in her ephemeral events.
        typed = await bob.room_typing(room_id, True, timeout=30000)
        assert isinstance(typed, nio.RoomTypingResponse), typed

        def alice_sees_typing(rs):
            for r in rs:
                room = r.rooms.join.get(room_id)
                for ev in (room.ephemeral if room else []):
                    if isinstance(ev, nio.TypingNoticeEvent) and bob.user_id in ev.users:
                        return True
            return False

        await sync_until(alice, alice_sees_typing)

        # Receipts: Bob reads the last message, Alice sees the receipt.
        read = await bob.room_read_markers(room_id, fully_read_event=expected[-1], read_event=expected[-1])
        assert isinstance(read, nio.RoomReadMarkersResponse), read

        def alice_sees_receipt(rs):
            for r in rs:
                room = r.rooms.join.get(room_id)
                for ev in (room.ephemeral if room else []):
                    if isinstance(ev, nio.ReceiptEvent):
                        for rec in ev.receipts:
                            if rec.user_id == bob.user_id and rec.event_id == expected[-1]:
                                return True
            return False

        await sync_until(alice, alice_sees_receipt)

        # Bob answers; Alice sees it exactly once.
        reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"})
        responses = await sync_until(alice, lambda rs: reply.event_id in {e.event_id for e in timeline(rs, room_id)})
        self.assertEqual([e.event_id for e in timeline(responses, room_id)].count(reply.event_id), 1)


class MessageRateLimitTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_message_limit_shared_by_instances(self):
        """Per-user message limits answer 429 M_LIMIT_EXCEEDED with retry_after_ms, counted once per message."""
        import treq

        stack = Stack(self, reactor, layout_three(None), extra_config={
            "rate_limits": {"enabled": True, "message_per_user": {"per_second": 0.01, "burst": 3}}})
        yield stack.start()
        resp = yield treq.post(stack.base + "/_matrix/client/v3/register", json={"username": "carol", "password": "carol password 1", "auth": {"type": "m.login.dummy"}}, persistent=False)
        body = yield treq.json_content(resp)
        self.assertEqual(resp.code, 200, body)
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        resp = yield treq.post(stack.base + "/_matrix/client/v3/createRoom", json={}, headers=headers, persistent=False)
        room = (yield treq.json_content(resp))["room_id"]
        codes = []
        for i in range(5):
            resp = yield treq.put(f"{stack.base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}", json={"msgtype": "m.text", "body": str(i)}, headers=headers, persistent=False)
            body = yield treq.json_content(resp)
            codes.append(resp.code)
        self.assertEqual(codes, [200, 200, 200, 429, 429])
        self.assertEqual(body["errcode"], "M_LIMIT_EXCEEDED")
        self.assertGreater(body["retry_after_ms"], 0)
