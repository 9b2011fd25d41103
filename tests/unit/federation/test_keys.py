"""Local signing keys (file, generation race, published response) and remote key response validation."""

import os
import tempfile

from twisted.trial import unittest

from homeserver.core.signing import (
    OldVerifyKey,
    encode_verify_key_base64,
    get_verify_key,
    sign_json,
    signing_key_from_seed,
    verify_signed_json,
)
from homeserver.federation.keys import (
    KeyLookupError,
    LocalKeys,
    check_notary_signature,
    load_or_generate_signing_keys,
    parse_key_response,
)

KEY = signing_key_from_seed("k1", b"\x01" * 32)
OTHER = signing_key_from_seed("k2", b"\x02" * 32)
DAY = 24 * 3600 * 1000


def vk64(key):
    return encode_verify_key_base64(get_verify_key(key))


class LocalKeysTests(unittest.TestCase):
    def test_generate_then_reuse(self):
        """The first start writes a Synapse-format key file (0600); later starts read it back."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "sub", "hs.signing.key")
        first = load_or_generate_signing_keys(path)
        again = load_or_generate_signing_keys(path)
        self.assertEqual(vk64(first[0]), vk64(again[0]))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            alg, version, seed = f.read().split()
        self.assertEqual(alg, "ed25519")
        self.assertEqual(version, first[0].version)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["hs.signing.key"])

    def test_existing_synapse_file(self):
        """A key file written by Synapse is used as is."""
        d = tempfile.mkdtemp()
        path = os.path.join(d, "k")
        with open(path, "w") as f:
            f.write("ed25519 a_abcd AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n")
        (key,) = load_or_generate_signing_keys(path)
        self.assertEqual(key.version, "a_abcd")
        self.assertEqual(vk64(key), vk64(signing_key_from_seed("x", b"\x01" * 32)))

    def test_published_response(self):
        """The key server body lists current and old keys, validity, and is self-signed."""
        old = OldVerifyKey("ed25519:old", vk64(OTHER), 1234)
        local = LocalKeys("me.test", [KEY], [old])
        body = local.server_keys_response(now_ms=1000, validity_ms=DAY)
        self.assertEqual(body["valid_until_ts"], 1000 + DAY)
        self.assertEqual(body["verify_keys"], {"ed25519:k1": {"key": vk64(KEY)}})
        self.assertEqual(body["old_verify_keys"], {"ed25519:old": {"key": vk64(OTHER), "expired_ts": 1234}})
        verify_signed_json(body, "me.test", get_verify_key(KEY))
        self.assertTrue(local.server_key("ed25519:old", 0, DAY).is_old)
        self.assertIsNone(local.server_key("ed25519:nope", 0, DAY))


def response(server="remote.test", key=KEY, valid_until=10 * DAY, old=None, sign=True):
    body = {
        "server_name": server,
        "valid_until_ts": valid_until,
        "verify_keys": {"ed25519:" + key.version: {"key": vk64(key)}},
        "old_verify_keys": old or {},
    }
    return sign_json(body, server, key) if sign else body


class ParseKeyResponseTests(unittest.TestCase):
    def test_valid(self):
        """A self-signed response yields its keys with the 7-day validity cap applied."""
        r = parse_key_response(response(old={"ed25519:o": {"key": vk64(OTHER), "expired_ts": 5}}), "remote.test", "remote.test", 0)
        keys = {k.key_id: k for k in r.keys}
        self.assertEqual(keys["ed25519:k1"].valid_until_ts, 7 * DAY)
        self.assertFalse(keys["ed25519:k1"].is_old)
        self.assertEqual((keys["ed25519:o"].expired_ts, keys["ed25519:o"].valid_until_ts), (5, 5))
        self.assertEqual(r.valid_until_ts, 10 * DAY)
        short = parse_key_response(response(valid_until=DAY), "remote.test", "remote.test", 0)
        self.assertEqual(short.keys[0].valid_until_ts, DAY)

    def test_refusals(self):
        """Wrong server, unsigned, badly signed, signed by an unlisted key, or malformed: KeyLookupError."""
        tampered = response()
        tampered["valid_until_ts"] += 1
        by_other = sign_json(response(sign=False), "remote.test", OTHER)
        no_valid_until = response()
        del no_valid_until["valid_until_ts"]
        for obj, expected in [
            (response(server="evil.test"), "remote.test"),
            (response(sign=False), "remote.test"),
            (tampered, "remote.test"),
            (by_other, "remote.test"),
            (no_valid_until, "remote.test"),
            ([], "remote.test"),
            (response(server="bad name!"), None),
        ]:
            with self.assertRaises(KeyLookupError):
                parse_key_response(obj, expected, "x", 0)

    def test_notary_signature(self):
        """A notary's answer must carry a valid signature by one of its pinned keys."""
        obj = sign_json(response(), "notary.test", OTHER)
        check_notary_signature(obj, "notary.test", {"ed25519:k2": vk64(OTHER)})
        with self.assertRaises(KeyLookupError):
            check_notary_signature(obj, "notary.test", {"ed25519:k2": vk64(KEY)})
        with self.assertRaises(KeyLookupError):
            check_notary_signature(response(), "notary.test", {"ed25519:k2": vk64(OTHER)})
