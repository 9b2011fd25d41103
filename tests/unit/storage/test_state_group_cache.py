"""The in-memory cache of resolved state groups (``storage.stores.events.StateGroupCache``)."""

from twisted.trial.unittest import SynchronousTestCase

from storage.stores.events import StateGroupCache


def state(n: int, tag: str = "") -> dict[tuple[str, str], str]:
    return {("m.room.member", f"@u{i}:hs"): f"$e{i}{tag}" for i in range(n)}


class StateGroupCacheTests(SynchronousTestCase):
    def test_miss_then_hit(self) -> None:
        """A group put is found again, counted as a hit; an unknown one is a miss."""
        cache = StateGroupCache(100)
        self.assertIsNone(cache.get("!r:hs", 1))
        cache.put("!r:hs", 1, state(3))
        self.assertEqual(cache.get("!r:hs", 1), state(3))
        self.assertEqual((cache.hits, cache.misses), (1, 1))
        # Groups are per room: the same number in another room is another group.
        self.assertIsNone(cache.get("!other:hs", 1))

    def test_copies_in_and_out(self) -> None:
        """Neither the dict put nor one handed out can change what is held."""
        cache = StateGroupCache(100)
        original = state(2)
        cache.put("!r:hs", 1, original)
        original.clear()
        out = cache.get("!r:hs", 1)
        assert out is not None
        out[("m.room.name", "")] = "$x"
        self.assertEqual(cache.get("!r:hs", 1), state(2))

    def test_bounded_by_entries_least_recently_used_out(self) -> None:
        """The bound counts state entries; the least recently read group goes first."""
        cache = StateGroupCache(10)
        cache.put("!r:hs", 1, state(4, "a"))
        cache.put("!r:hs", 2, state(4, "b"))
        self.assertIsNotNone(cache.get("!r:hs", 1))  # 1 is now more recent than 2
        cache.put("!r:hs", 3, state(4, "c"))  # 12 entries: one group must go
        self.assertIsNone(cache.get("!r:hs", 2))
        self.assertEqual(cache.get("!r:hs", 1), state(4, "a"))
        self.assertEqual(cache.get("!r:hs", 3), state(4, "c"))

    def test_a_group_larger_than_the_bound_is_not_kept(self) -> None:
        """A group alone over the bound is not cached (and evicts nothing)."""
        cache = StateGroupCache(5)
        cache.put("!r:hs", 1, state(2))
        cache.put("!r:hs", 2, state(6))
        self.assertIsNone(cache.get("!r:hs", 2))
        self.assertEqual(cache.get("!r:hs", 1), state(2))

    def test_zero_disables(self) -> None:
        """A bound of 0 keeps nothing."""
        cache = StateGroupCache(0)
        cache.put("!r:hs", 1, state(1))
        self.assertIsNone(cache.get("!r:hs", 1))
