"""A display name change reaches every joined room, across shard owners."""

import asyncio

from twisted.internet import defer, reactor
from twisted.trial import unittest

from homeserver.sharding import shard_for
from tests.e2e.stack import Stack

try:
    import nio
except ImportError:  # pragma: no cover
    nio = None

REST = {s: "all" for s in ("receipts", "typing", "presence", "to_device", "account_data", "device_lists", "push_rules")}


def two_writers():
    return {
        "w1": {"roles": ["client_writer", "admin", "background", "federation_sender", "pusher"], "shards": {"events": "0-7", **REST}},
        "w2": {"roles": ["client_writer"], "shards": {"events": "8-15"}},
        "reader": {"roles": ["client_reader", "federation_inbound", "media"]},
        "sync": {"roles": ["sync"]},
    }


def as_deferred(coro):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


class ProfileMemberTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")

    @defer.inlineCallbacks
    def test_displayname_updates_member_events_on_both_writers(self):
        """Rooms on both writers get Alice's new member event."""
        stack = Stack(self, reactor, two_writers())
        yield stack.start()
        yield as_deferred(self._scenario(stack))

    async def _scenario(self, stack):
        alice = nio.AsyncClient(stack.base, "alice")
        self.addCleanup(lambda: as_deferred(alice.close()))
        assert isinstance(await alice.register("alice", "password for alice 1"), nio.RegisterResponse)
        rooms = {}
        # Create rooms until both writers own at least one.
        while len({shard_for(r, 16) < 8 for r in rooms}) < 2 or len(rooms) < 2:
            created = await alice.room_create(name=f"room {len(rooms)}")
            assert isinstance(created, nio.RoomCreateResponse), created
            rooms[created.room_id] = True
            assert len(rooms) < 40
        resp = await alice.set_displayname("Alice Liddell")
        assert isinstance(resp, nio.ProfileSetDisplayNameResponse), resp

        pending = set(rooms)
        loop = asyncio.get_event_loop()
        deadline = loop.time() + 30
        since = None
        while pending and loop.time() < deadline:
            r = await alice.sync(timeout=2000, since=since, full_state=since is None)
            since = r.next_batch
            for room_id in list(pending):
                room = r.rooms.join.get(room_id)
                if room is None:
                    continue
                for ev in list(room.timeline.events) + list(room.state):
                    if isinstance(ev, nio.RoomMemberEvent) and ev.state_key == alice.user_id and ev.content.get("displayname") == "Alice Liddell":
                        pending.discard(room_id)
        self.assertEqual(pending, set(), "rooms without the updated member event")
