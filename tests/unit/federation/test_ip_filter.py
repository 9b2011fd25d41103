"""The outbound address filter: default blocked ranges, exceptions, odd inputs."""

from twisted.trial import unittest

from homeserver.federation.ip_filter import ALLOW_ALL, AddressFilter, parse_networks


class AddressFilterTests(unittest.TestCase):
    def test_defaults_block_internal(self):
        """Loopback, private, link-local and mapped-private addresses are blocked; public ones pass."""
        f = AddressFilter()
        for address in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.5.4", "169.254.169.254", "::1", "fe80::1",
                        "fd00::1", "::ffff:127.0.0.1", "0.0.0.0"):
            self.assertFalse(f.permits(address), address)
        for address in ("8.8.8.8", "2606:4700::1111", "1.1.1.1"):
            self.assertTrue(f.permits(address), address)

    def test_allowed_overrides(self):
        """An allowed range re-opens part of a blocked one."""
        f = AddressFilter(allowed=parse_networks(["10.0.5.0/24"]))
        self.assertTrue(f.permits("10.0.5.7"))
        self.assertFalse(f.permits("10.0.6.7"))

    def test_allow_all_and_garbage(self):
        """ALLOW_ALL permits any IP; something that is not an IP is never permitted."""
        self.assertTrue(ALLOW_ALL.permits("127.0.0.1"))
        self.assertFalse(ALLOW_ALL.permits("localhost"))
        with self.assertRaises(ValueError):
            parse_networks(["10.0.0.0/33"])
