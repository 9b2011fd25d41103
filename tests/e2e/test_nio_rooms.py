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
