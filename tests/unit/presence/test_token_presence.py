"""The optional presence section of sync tokens."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken

COUNTS = {"events": 2, "receipts": 1, "typing": 1, "presence": 2}


class PresenceTokenTests(unittest.TestCase):
    """StreamToken.presence."""

    def test_round_trip_and_max(self) -> None:
        """A token with presence positions encodes a p section and decodes back; max_with is per shard."""
        token = StreamToken((1, 2), (3,), (4,), 5, (6, 40))
        text = token.encode()
        self.assertTrue(text.endswith("_p6.14"))
        self.assertEqual(StreamToken.decode(text, COUNTS), token)
        other = StreamToken((0, 9), (0,), (0,), 0, (7, 1))
        self.assertEqual(token.max_with(other).presence, (7, 40))

    def test_token_without_presence_reads_as_zero(self) -> None:
        """A token from before presence decodes with presence 0 on every shard."""
        old = "s1_e1.2_r3_t4_a5"
        self.assertEqual(StreamToken.decode(old, COUNTS).presence, (0, 0))
        self.assertEqual(StreamToken.decode(old, {**COUNTS, "presence": 0}).presence, ())

    def test_bad_presence_sections_refused(self) -> None:
        """A presence section of the wrong shard count or letter is refused."""
        for text in ("s1_e1.2_r3_t4_a5_p1", "s1_e1.2_r3_t4_a5_x1.2", "s1_e1.2_r3_t4_a5_p1.2_p3"):
            self.assertRaises(InvalidTokenError, StreamToken.decode, text, COUNTS)
