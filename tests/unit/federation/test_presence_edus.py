"""Presence over federation: the m.presence push entries (pure) and the EDU's checks (fakes)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.core import presence as p
from homeserver.errors import MatrixError
from homeserver.federation.rooms import FederationRooms


class PushEntryTests(unittest.TestCase):
    def test_round_trip(self) -> None:
        """An online user's entry carries last_active_ago/currently_active and reads back."""
        now = 1_000_000
        mine = p.UserPresence("@a:hs", p.ONLINE, "hi", now - 5_000, now - 1_000)
        entry = p.to_federation(mine, now)
        self.assertEqual(entry, {"user_id": "@a:hs", "presence": "online", "last_active_ago": 5_000,
                                 "status_msg": "hi", "currently_active": True})
        theirs = p.from_federation(entry, now + 100)
        self.assertEqual(theirs, p.UserPresence("@a:hs", p.ONLINE, "hi", now + 100 - 5_000, now + 100))

    def test_offline_never_active(self) -> None:
        """An entry without last_active_ago means never active (0), not 'now'."""
        self.assertEqual(p.from_federation({"user_id": "@a:hs", "presence": "offline"}, 50),
                         p.UserPresence("@a:hs", p.OFFLINE, None, 0, 50))

    def test_malformed(self) -> None:
        """Wrong types and unknown states give None."""
        for entry in ([], {"presence": "online"}, {"user_id": "@a:hs", "presence": "busy"},
                      {"user_id": "@a:hs", "presence": "online", "last_active_ago": -1},
                      {"user_id": "@a:hs", "presence": "online", "last_active_ago": "5"},
                      {"user_id": "@a:hs", "presence": "online", "last_active_ago": True},
                      {"user_id": "@a:hs", "presence": "online", "status_msg": 5}):
            self.assertIsNone(p.from_federation(entry, 10), entry)


class _Dispatcher:
    def __init__(self) -> None:
        self.runs: list[tuple[str, str, Any]] = []

    def register(self, *args: Any) -> None:
        pass

    async def run(self, command: str, key: str, args: Any) -> Any:
        self.runs.append((command, key, args))
        return {}


class _Store:
    def __init__(self, joined: set[str]) -> None:
        self.joined = joined

    async def is_joined_anywhere(self, user_id: str) -> bool:
        return user_id in self.joined

    async def get_servers_sharing_rooms(self, user_id: str) -> set[str]:
        return {"a.test", "b.test", "c.test"}


class _Queue:
    def __init__(self) -> None:
        self.edus: list[tuple[str, Any, Any]] = []

    async def enqueue_edu(self, destination: str, edu: Any, coalesce_key: Any = None) -> None:
        self.edus.append((destination, edu, coalesce_key))


class _Writer:
    def __init__(self) -> None:
        self.observers: list[Any] = []


class _Events:
    loader = None


class PresenceEduTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.dispatcher = _Dispatcher()
        self.queue = _Queue()
        self.writer = _Writer()
        self.rooms = FederationRooms(self.clock, "a.test", _Events(), self.dispatcher, None, None, self.queue)
        self.rooms.attach_presence(self.writer, _Store({"@bob:b.test"}))

    async def test_inbound_only_origin_users_who_share_a_room(self) -> None:
        """Entries for users of another server, or of nobody joined here, are dropped."""
        entry = {"user_id": "@bob:b.test", "presence": "online"}
        await self.rooms.edu_handlers["m.presence"]("b.test", {"push": [
            entry, {"user_id": "@carol:c.test", "presence": "online"}, {"user_id": "@dan:b.test", "presence": "online"}, 7]})
        self.assertEqual(self.dispatcher.runs, [("presence.remote", "@bob:b.test", {"entry": entry})])

    async def test_inbound_malformed(self) -> None:
        """A content without a push list is M_BAD_JSON."""
        for content in ({}, {"push": {}}, []):
            with self.assertRaises(MatrixError) as caught:
                await self.rooms.edu_handlers["m.presence"]("b.test", content)
            self.assertEqual(caught.exception.errcode, "M_BAD_JSON")

    def test_outbound_local_changes_to_room_servers(self) -> None:
        """A local user's change is queued once per other server, coalesced per user; remote users' are not."""
        [observer] = self.writer.observers
        observer(p.UserPresence("@alice:a.test", p.ONLINE, None, 1_000_000, 1_000_000))
        observer(p.UserPresence("@bob:b.test", p.ONLINE, None, 1_000_000, 1_000_000))
        self.assertEqual([(d, k) for d, _, k in self.queue.edus],
                         [("b.test", "m.presence:@alice:a.test"), ("c.test", "m.presence:@alice:a.test")])
        self.assertEqual(self.queue.edus[0][1]["content"]["push"][0]["user_id"], "@alice:a.test")
