"""Key naming, the pure gap rule and the backoff policy."""

from twisted.trial.unittest import SynchronousTestCase

from bus.backoff import Backoff
from bus.keys import epoch_key, hash_tag, stream_key, validate_group_name
from bus.model import GAP_MISSED, GAP_UNKNOWN_PREV, Entry, Gap, ShardId, gap_before


class KeyTests(SynchronousTestCase):
    def test_names(self):
        """Every key of a shard carries the shard's hash tag."""
        self.assertEqual(hash_tag("events", 7), "{events:7}")
        self.assertEqual(stream_key("events", 7), "estuary:{events:7}")
        self.assertEqual(epoch_key("events", 7), "estuary:{events:7}:epoch")
        self.assertEqual(stream_key("to_device", 0, "test"), "test:{to_device:0}")

    def test_invalid_names(self):
        """Names that would break key syntax or hash tags are refused."""
        for bad in ("", "Events", "a{b", "a:b", "a b", "x" * 65, None):
            self.assertRaises(ValueError, stream_key, bad, 0)
        for bad in (-1, True, "1", 1.5):
            self.assertRaises(ValueError, stream_key, "events", bad)
        self.assertRaises(ValueError, validate_group_name, "has space")
        self.assertEqual(validate_group_name("sync@host-1:42"), "sync@host-1:42")

    def test_shard_id_validates(self):
        """ShardId refuses bad names and numbers and prints as stream:shard."""
        self.assertEqual(str(ShardId("events", 3)), "events:3")
        self.assertRaises(ValueError, ShardId, "a:b", 0)
        self.assertRaises(ValueError, ShardId, "events", -2)


def entry(position, prev):
    return Entry("events", 1, position, prev, {})


class GapRuleTests(SynchronousTestCase):
    def test_holes_are_not_gaps(self):
        """A hole in the numbering (rolled-back transaction) is not a gap."""
        self.assertIsNone(gap_before(5, entry(9, 5)))

    def test_prev_below_position_is_not_a_gap(self):
        """A consumer that caught up past prev (from PostgreSQL) misses nothing."""
        self.assertIsNone(gap_before(7, entry(9, 5)))

    def test_prev_above_position_is_a_gap(self):
        """An entry whose prev the consumer has not seen reveals a gap."""
        self.assertEqual(gap_before(3, entry(9, 5)), Gap("events", 1, 3, 9, GAP_MISSED))

    def test_unknown_prev_is_a_gap(self):
        """A restarted writer cannot vouch for what came before: always a gap."""
        self.assertEqual(gap_before(7, entry(9, None)), Gap("events", 1, 7, 9, GAP_UNKNOWN_PREV))

    def test_adjacent_entry_is_never_a_gap(self):
        """Nothing fits between P and P+1, whatever prev says."""
        self.assertIsNone(gap_before(8, entry(9, None)))
        self.assertIsNone(gap_before(0, entry(1, None)))


class BackoffTests(SynchronousTestCase):
    def test_exponential_and_capped(self):
        """Delays double from ``initial`` and stop at ``maximum``."""
        b = Backoff(initial=0.5, factor=2, maximum=3, jitter=lambda: 1.0)
        self.assertEqual([b.delay(i) for i in range(5)], [0.5, 1.0, 2.0, 3, 3])
        self.assertEqual(b.delay(10_000), 3)

    def test_jitter_scales_and_is_clamped(self):
        """Jitter multiplies the delay and is clamped to [0, 1]."""
        self.assertEqual(Backoff(initial=1, jitter=lambda: 0.25).delay(0), 0.25)
        self.assertEqual(Backoff(initial=1, jitter=lambda: 7).delay(0), 1)
        self.assertRaises(ValueError, Backoff().delay, -1)

    def test_default_jitter_in_range(self):
        """The default jitter keeps delays between half and all of the base."""
        b = Backoff(initial=1, maximum=1)
        for _ in range(50):
            self.assertTrue(0.5 <= b.delay(3) <= 1.0)


class MarksKeyTests(SynchronousTestCase):
    def test_marks_key(self):
        """A scope is its own hash tag; braces in it are refused."""
        from bus.keys import marks_key

        self.assertEqual(marks_key("@a:b.c"), "estuary:marks:{@a:b.c}")
        for bad in ("", "a{b", "a}b"):
            with self.assertRaises(ValueError):
                marks_key(bad)
