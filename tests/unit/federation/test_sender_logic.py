"""Sender pure parts: destination sharding over sender instances, transaction bodies."""

import json

from twisted.trial import unittest

from homeserver.federation.sender import build_transaction_body, destination_owner
from homeserver.sharding import shard_for


class OwnerTests(unittest.TestCase):
    def test_stable_hash_over_sorted_names(self):
        """The owner is shard_for(destination, n) over the instance names sorted, whatever their order."""
        names = ["fs_c", "fs_a", "fs_b"]
        for dest in ("matrix.org", "example.com:8448", "[::1]"):
            expected = sorted(names)[shard_for(dest, 3)]
            self.assertEqual(destination_owner(dest, names), expected)
            self.assertEqual(destination_owner(dest, list(reversed(names))), expected)

    def test_spread_and_single(self):
        """One instance owns everything; several share destinations between them."""
        self.assertEqual({destination_owner(f"s{i}.test", ["only"]) for i in range(50)}, {"only"})
        self.assertEqual({destination_owner(f"s{i}.test", ["a", "b"]) for i in range(200)}, {"a", "b"})
        with self.assertRaises(ValueError):
            destination_owner("x.test", [])


class BodyTests(unittest.TestCase):
    def test_body(self):
        """The body carries origin, timestamp, PDUs and EDUs in queue order."""
        body = json.loads(build_transaction_body("me.test", 5, ['{"a":1}', '{"a":2}'], ['{"edu_type":"x"}']))
        self.assertEqual(body, {"origin": "me.test", "origin_server_ts": 5, "pdus": [{"a": 1}, {"a": 2}], "edus": [{"edu_type": "x"}]})
