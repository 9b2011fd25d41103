"""MembershipCache: memberships held between /sync builds, dropped by the events tail."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from homeserver.handlers.sync.memberships import MembershipCache
from storage.stores.events import StreamRow


def member_row(user: str, membership: str = "join") -> StreamRow:
    return StreamRow(0, 1, "!r:hs", "$m", "m.room.member", user, "@s:hs", membership)


class Reader:
    """``get_memberships_for_user`` whose answers the test releases."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, defer.Deferred]] = []
        self.db: dict[str, list[str]] = {"@u:hs": ["!a"], "@v:hs": ["!b"]}

    def read(self, user_id: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append((user_id, d))
        return d

    def release_all(self) -> None:
        pending, self.pending = self.pending, []
        for user_id, d in pending:
            d.callback(list(self.db[user_id]))


class MembershipCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reader = Reader()
        self.cache = MembershipCache(self.reader.read)

    def get(self, user_id: str) -> defer.Deferred:
        return defer.ensureDeferred(self.cache.get(user_id))

    def test_held_after_a_read(self) -> None:
        d = self.get("@u:hs")
        self.reader.release_all()
        self.assertEqual(self.successResultOf(d), ["!a"])
        self.assertEqual(self.successResultOf(self.get("@u:hs")), ["!a"])
        self.assertEqual(self.reader.pending, [])
        self.assertEqual((self.cache.hits, self.cache.misses), (1, 1))

    def test_the_users_membership_event_drops_it(self) -> None:
        self.get("@u:hs")
        self.get("@v:hs")
        self.reader.release_all()
        self.reader.db["@u:hs"] = ["!a", "!c"]
        # Other users' member events and non-member events leave it alone.
        self.cache.on_row(0, member_row("@v:hs"))
        self.cache.on_row(0, StreamRow(0, 2, "!r:hs", "$x", "m.room.message", None, "@u:hs", None))
        self.cache.on_row(0, StreamRow(0, 3, "!r:hs", "$n", "m.room.name", "@u:hs", "@u:hs", None))
        self.assertEqual(self.cache.peek("@u:hs"), ["!a"])
        self.assertIsNone(self.cache.peek("@v:hs"))
        self.cache.on_row(0, member_row("@u:hs", "invite"))
        d = self.get("@u:hs")
        self.reader.release_all()
        self.assertEqual(self.successResultOf(d), ["!a", "!c"])

    def test_a_read_overlapping_a_drop_is_not_kept(self) -> None:
        d = self.get("@u:hs")
        self.cache.on_row(0, member_row("@u:hs"))  # arrives while PostgreSQL answers
        self.reader.release_all()
        self.assertEqual(self.successResultOf(d), ["!a"])  # the caller gets it...
        self.assertIsNone(self.cache.peek("@u:hs"))  # ...but it is not trusted later
        # A read begun after the drop is kept, even if an older one ends after it.
        first = self.get("@u:hs")
        self.cache.invalidate("@u:hs")
        second = self.get("@u:hs")
        self.reader.release_all()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.cache.peek("@u:hs"), ["!a"])

    def test_clear_drops_everything_and_reads_in_flight(self) -> None:
        self.get("@u:hs")
        self.reader.release_all()
        d = self.get("@v:hs")
        self.cache.clear()
        self.reader.release_all()
        self.successResultOf(d)
        self.assertIsNone(self.cache.peek("@u:hs"))
        self.assertIsNone(self.cache.peek("@v:hs"))

    def test_bounded(self) -> None:
        cache = MembershipCache(self.reader.read, max_users=1)
        defer.ensureDeferred(cache.get("@u:hs"))
        defer.ensureDeferred(cache.get("@v:hs"))
        self.reader.release_all()
        self.assertIsNone(cache.peek("@u:hs"))
        self.assertEqual(cache.peek("@v:hs"), ["!b"])

    def test_copies(self) -> None:
        self.get("@u:hs")
        self.reader.release_all()
        got: Any = self.successResultOf(self.get("@u:hs"))
        got.append("!zzz")
        self.assertEqual(self.cache.peek("@u:hs"), ["!a"])
