"""Tests for the shard function."""

from collections import Counter

from twisted.trial import unittest

from homeserver.sharding import murmur_hash2, nginx_percent, shard_for


class ShardingTests(unittest.TestCase):
    def test_murmur_known_values(self):
        """MurmurHash2 (seed = length) matches independently computed values."""
        # Computed with a C build of nginx's ngx_murmur_hash2 (seed = length),
        # covering every tail length and multi-byte UTF-8.
        known = {
            "a": 2456313694,
            "ab": 446775395,
            "abc": 324500635,
            "abcd": 646393889,
            "!room:example.org": 1644067003,
            "@alice:example.org": 3895094200,
            "\u00e9t\u00e9": 3166621950,
        }
        for text, value in known.items():
            self.assertEqual(murmur_hash2(text.encode("utf-8")), value, text)

    def test_stable_and_in_range(self):
        """Shards are in range and stable for a key."""
        for n in (1, 2, 3, 7, 16, 100):
            for i in range(200):
                s = shard_for(f"!room{i}:example.org", n)
                self.assertTrue(0 <= s < n)
                self.assertEqual(s, shard_for(f"!room{i}:example.org", n))

    def test_roughly_uniform(self):
        """10k room IDs spread over 16 shards within 20% of even."""
        counts = Counter(shard_for(f"!r{i}:hs", 16) for i in range(10000))
        self.assertEqual(len(counts), 16)
        for c in counts.values():
            self.assertTrue(500 < c < 750, counts)

    def test_nginx_percent(self):
        """Percent strings use two decimals, truncated."""
        self.assertEqual(nginx_percent(16), "6.25%")
        self.assertEqual(nginx_percent(3), "33.33%")
        self.assertEqual(nginx_percent(1), "100.00%")
