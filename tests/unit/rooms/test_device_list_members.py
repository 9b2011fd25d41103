"""Membership changes for device lists come from the events tail when it holds the range."""

from typing import Any, Optional

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from homeserver.handlers.sync.device_lists import DeviceListSource
from storage.stores.events import StreamRow


def row(shard: int, pos: int, room: str, etype: str, state_key: Optional[str] = None,
        membership: Optional[str] = None) -> StreamRow:
    return StreamRow(shard, pos, room, f"$e{shard}-{pos}", etype, state_key, "@s:hs", membership)


class FakeTail:
    """Rows per shard, held from ``floor`` on (a range starting below it is not held)."""

    def __init__(self, rows: dict[int, list[StreamRow]], floor: int = 0) -> None:
        self._rows = rows
        self._floor = floor

    def rows(self, shard: int, after: int, upto: int) -> Optional[list[StreamRow]]:
        if after < self._floor:
            return None
        return [r for r in self._rows.get(shard, []) if after < r.stream_position <= upto]


class RecordingStore:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def get_membership_changes(self, wanted: Any) -> "defer.Deferred[list[tuple[str, str, str]]]":
        self.calls.append(wanted)
        return defer.succeed([("!from-db:hs", "@x:hs", "join")])


ROWS = {
    0: [row(0, 1, "!a:hs", "m.room.member", "@u:hs", "join"),
        row(0, 2, "!a:hs", "m.room.message"),
        row(0, 3, "!other:hs", "m.room.member", "@v:hs", "join"),
        row(0, 5, "!a:hs", "m.room.member", "@u:hs", "leave")],
    1: [row(1, 4, "!b:hs", "m.room.member", "@w:hs", "invite"),
        row(1, 6, "!b:hs", "m.room.name", "")],
}


class MembershipChangesTests(TestCase):
    async def test_from_the_tail_in_store_order(self) -> None:
        """Member events of the wanted rooms in the ranges, by position, without a database read."""
        store = RecordingStore()
        source = DeviceListSource(store, None, None, lambda r: 0, 2, events_tail=FakeTail(ROWS))
        got = await source._membership_changes({0: (["!a:hs"], 0, 5), 1: (["!b:hs"], 0, 6)})
        self.assertEqual(got, [("!a:hs", "@u:hs", "join"), ("!b:hs", "@w:hs", "invite"), ("!a:hs", "@u:hs", "leave")])
        self.assertEqual(store.calls, [])
        # Range bounds: after is exclusive, upto inclusive.
        self.assertEqual(await source._membership_changes({0: (["!a:hs"], 1, 4)}), [])

    async def test_a_range_the_tail_lacks_reads_the_store(self) -> None:
        """If any range is older than the tail holds, every range is read from PostgreSQL."""
        store = RecordingStore()
        source = DeviceListSource(store, None, None, lambda r: 0, 2, events_tail=FakeTail(ROWS, floor=3))
        wanted = {0: (["!a:hs"], 3, 5), 1: (["!b:hs"], 0, 6)}
        self.assertEqual(await source._membership_changes(wanted), [("!from-db:hs", "@x:hs", "join")])
        self.assertEqual(store.calls, [wanted])

    async def test_without_a_tail_reads_the_store(self) -> None:
        store = RecordingStore()
        source = DeviceListSource(store, None, None, lambda r: 0, 2)
        await source._membership_changes({0: (["!a:hs"], 0, 5)})
        self.assertEqual(len(store.calls), 1)
