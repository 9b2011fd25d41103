"""Ordering of stream positions that commit out of order (pure PositionTracker)."""

import random

from twisted.trial import unittest

from storage.streams import Published, PositionTracker, shard_sequence_name, validate_stream_shard


class PositionTrackerTests(unittest.TestCase):
    def test_in_order_commits_release_immediately(self):
        """Positions committed in allocation order are released one by one."""
        t = PositionTracker(10)
        t.add(11)
        t.add(12)
        self.assertEqual(t.commit(11), [Published(11, 10, ())])
        self.assertEqual(t.current, 11)
        self.assertEqual(t.commit(12), [Published(12, 11, ())])
        self.assertEqual(t.current, 12)

    def test_later_commit_waits_for_earlier(self):
        """12 committing before 11 is held back until 11 commits, then both are released in order."""
        t = PositionTracker(10)
        t.add(11)
        t.add(12)
        t.attach(12, "b")
        t.attach(11, "a")
        self.assertEqual(t.commit(12), [])
        self.assertEqual(t.current, 10)
        self.assertEqual(t.in_flight, frozenset({11}))
        self.assertEqual(t.commit(11), [Published(11, 10, ("a",)), Published(12, 11, ("b",))])
        self.assertEqual(t.current, 12)
        self.assertEqual(t.in_flight, frozenset())

    def test_abort_unblocks_and_is_skipped(self):
        """An aborted position advances the current position but is never published."""
        t = PositionTracker(0)
        for p in (1, 2, 3):
            t.add(p)
        t.attach(2, "two")
        self.assertEqual(t.commit(3), [])
        self.assertEqual(t.abort(2), [])
        self.assertEqual(t.current, 0)
        self.assertEqual(t.commit(1), [Published(1, 0, ()), Published(3, 1, ())])
        self.assertEqual(t.current, 3)
        self.assertEqual(t.last_published, 3)

    def test_trailing_abort_advances_current_not_published(self):
        """Aborting the newest position moves current but not the last published position."""
        t = PositionTracker(5)
        t.add(6)
        t.add(7)
        t.commit(6)
        self.assertEqual(t.abort(7), [])
        self.assertEqual(t.current, 7)
        self.assertEqual(t.last_published, 6)
        t.add(8)
        self.assertEqual(t.commit(8), [Published(8, 6, ())])

    def test_sequence_gaps(self):
        """Positions never allocated here (gaps in the sequence) do not block anything."""
        t = PositionTracker(0)
        t.add(5)
        t.add(9)
        self.assertEqual(t.commit(9), [])
        self.assertEqual(t.commit(5), [Published(5, 0, ()), Published(9, 5, ())])
        self.assertEqual(t.current, 9)

    def test_misuse_rejected(self):
        """Out-of-order allocation and finishing a position twice or unknown ones are errors."""
        t = PositionTracker(10)
        self.assertRaises(ValueError, t.add, 10)
        t.add(12)
        self.assertRaises(ValueError, t.add, 11)
        t.add(13)
        t.commit(13)
        self.assertRaises(ValueError, t.commit, 13)
        self.assertRaises(ValueError, t.abort, 13)
        self.assertRaises(ValueError, t.attach, 13, "late")
        self.assertRaises(ValueError, t.commit, 99)
        t.abort(12)
        self.assertRaises(ValueError, t.commit, 12)

    def test_random_interleavings(self):
        """Whatever the finishing order, releases are in position order, complete and respect current."""
        rng = random.Random(4321)
        for _ in range(200):
            t = PositionTracker(0)
            n = rng.randint(1, 30)
            positions = sorted(rng.sample(range(1, 100), n))
            for p in positions:
                t.add(p)
                t.attach(p, p * 10)
            outcome = {p: rng.random() < 0.7 for p in positions}
            finished = set()
            released = []
            for p in rng.sample(positions, n):
                released += t.commit(p) if outcome[p] else t.abort(p)
                finished.add(p)
                # current is the largest P with every allocated position <= P finished.
                unfinished = [q for q in positions if q not in finished]
                expected_current = max([0] + [q for q in positions if not unfinished or q < min(unfinished)])
                self.assertEqual(t.current, expected_current)
                for r in released:
                    self.assertLessEqual(r.position, t.current)
            committed = [p for p in positions if outcome[p]]
            self.assertEqual([r.position for r in released], committed)
            self.assertEqual([r.previous for r in released], ([0] + committed)[: len(committed)])
            self.assertEqual([r.payloads for r in released], [(p * 10,) for p in committed])


class NamingTests(unittest.TestCase):
    def test_sequence_name(self):
        """Each (stream, shard) has its own sequence name."""
        self.assertEqual(shard_sequence_name("events", 7), "stream_events_7_seq")
        self.assertEqual(shard_sequence_name("to_device", 0), "stream_to_device_0_seq")

    def test_invalid_names_rejected(self):
        """Stream names that could not be a plain identifier, and bad shard numbers, are refused."""
        for stream in ("", "Events", "7events", "ev-ents", 'ev"ents', "a" * 41):
            self.assertRaises(ValueError, shard_sequence_name, stream, 0)
        for shard in (-1, True, 1.0, "1"):
            self.assertRaises(ValueError, shard_sequence_name, "events", shard)
        self.assertRaises(ValueError, validate_stream_shard, "events", 4, 4)
