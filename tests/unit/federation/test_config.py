"""The federation config section: defaults, old keys, pinned notaries, refusals."""

from twisted.trial import unittest

from homeserver.config import ConfigError
from homeserver.config._base import Reader
from homeserver.config.federation import parse_federation


class FederationConfigTests(unittest.TestCase):
    def test_defaults(self):
        """Certificates are verified and no notary is trusted by default."""
        cfg = parse_federation(Reader({}))
        self.assertTrue(cfg.verify_certificates)
        self.assertEqual(cfg.trusted_key_servers, ())
        self.assertEqual(cfg.old_signing_keys, ())

    def test_full(self):
        """Every key is read."""
        r = Reader({
            "verify_certificates": False,
            "ca_certificates_path": "/etc/ca.pem",
            "old_signing_keys": {"ed25519:old": {"key": "abcd", "expired_ts": 5}},
            "trusted_key_servers": [{"server_name": "matrix.org", "verify_keys": {"ed25519:auto": "Noi6"}}],
            "destination_min_retry_interval_ms": 100,
            "destination_max_retry_interval_ms": 1000,
        })
        cfg = parse_federation(r)
        r.finish()
        self.assertEqual(r.unknown, [])
        self.assertFalse(cfg.verify_certificates)
        self.assertEqual(cfg.old_signing_keys[0].expired_ts, 5)
        self.assertEqual(cfg.trusted_key_servers[0].verify_keys, {"ed25519:auto": "Noi6"})

    def test_refusals(self):
        """Unpinned notaries, bad key IDs and inverted backoff bounds are config errors."""
        for data in [
            {"trusted_key_servers": [{"server_name": "matrix.org"}]},
            {"old_signing_keys": {"rsa:x": {"key": "ab", "expired_ts": 1}}},
            {"destination_min_retry_interval_ms": 10, "destination_max_retry_interval_ms": 5},
            {"verify_certificates": "no"},
        ]:
            with self.assertRaises(ConfigError, msg=repr(data)):
                parse_federation(Reader(data))

    def test_ip_ranges(self):
        """IP range lists are validated; absent blocklist means the defaults, empty means none."""
        self.assertIsNone(parse_federation(Reader({})).ip_range_blocklist)
        self.assertEqual(parse_federation(Reader({"ip_range_blocklist": []})).ip_range_blocklist, ())
        cfg = parse_federation(Reader({"ip_range_allowlist": ["10.0.0.0/8", "fd00::/8"]}))
        self.assertEqual(cfg.ip_range_allowlist, ("10.0.0.0/8", "fd00::/8"))
        with self.assertRaises(ConfigError):
            parse_federation(Reader({"ip_range_blocklist": ["10.0.0.0/99"]}))
