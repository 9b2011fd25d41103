"""Server discovery decisions with a fake DNS, a fake well-known fetcher and a fake clock."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.federation.discovery import (
    ServerResolver,
    SrvRecord,
    WellKnownResponse,
    order_srv_records,
    parse_well_known,
    well_known_ttl,
)


class FakeDns:
    def __init__(self, srv=None):
        self.srv = srv or {}
        self.srv_queries = []

    async def lookup_srv(self, name):
        self.srv_queries.append(name)
        return list(self.srv.get(name, []))

    async def lookup_addresses(self, host):
        return ["127.0.0.1"]


class FakeWellKnown:
    def __init__(self):
        self.answers = {}
        self.fetches = []

    async def fetch(self, host):
        self.fetches.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise ConnectionRefusedError("no server")
        return answer


def ok(server, cache_control=None):
    return WellKnownResponse(200, ('{"m.server": "%s"}' % server).encode(), cache_control)


class ResolveTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.dns = FakeDns()
        self.wk = FakeWellKnown()
        self.resolver = ServerResolver(self.clock, self.dns, self.wk, rand=lambda: 0.0)

    def resolve(self, name):
        return self.successResultOf(defer.ensureDeferred(self.resolver.resolve(name)))

    def test_ip_literals(self):
        """IP literals are used as is, port 8448 by default, Host is the server name, no lookups."""
        r = self.resolve("1.2.3.4")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("1.2.3.4", "1.2.3.4", (("1.2.3.4", 8448),)))
        r = self.resolve("[::1]:8000")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("[::1]:8000", "::1", (("::1", 8000),)))
        self.assertEqual(self.wk.fetches, [])

    def test_explicit_port(self):
        """A host with a port is connected to directly, with no well-known or SRV lookups."""
        r = self.resolve("example.test:1234")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("example.test:1234", "example.test", (("example.test", 1234),)))
        self.assertEqual((self.wk.fetches, self.dns.srv_queries), ([], []))

    def test_well_known_delegation_with_port(self):
        """m.server with a port: connect there, Host and certificate of the delegated name."""
        self.wk.answers["example.test"] = ok("delegated.test:9000")
        r = self.resolve("example.test")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("delegated.test:9000", "delegated.test", (("delegated.test", 9000),)))
        self.assertEqual(self.dns.srv_queries, [])

    def test_well_known_delegation_to_ip(self):
        """m.server that is an IP literal: certificate for that IP."""
        self.wk.answers["example.test"] = ok("10.0.0.1")
        r = self.resolve("example.test")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("10.0.0.1", "10.0.0.1", (("10.0.0.1", 8448),)))

    def test_well_known_then_srv(self):
        """m.server without port: SRV _matrix-fed._tcp of the delegated name, Host the delegated name."""
        self.wk.answers["example.test"] = ok("delegated.test")
        self.dns.srv["_matrix-fed._tcp.delegated.test"] = [SrvRecord(10, 0, 8443, "fed.host.test.")]
        r = self.resolve("example.test")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("delegated.test", "delegated.test", (("fed.host.test", 8443),)))

    def test_well_known_then_deprecated_srv_then_default(self):
        """Without _matrix-fed the deprecated _matrix SRV is used; without either, port 8448."""
        self.wk.answers["example.test"] = ok("delegated.test")
        self.dns.srv["_matrix._tcp.delegated.test"] = [SrvRecord(10, 0, 7000, "old.host.test")]
        r = self.resolve("example.test")
        self.assertEqual(r.targets, (("old.host.test", 7000),))
        self.assertEqual(self.dns.srv_queries, ["_matrix-fed._tcp.delegated.test", "_matrix._tcp.delegated.test"])
        self.wk.answers["other.test"] = ok("plain.test")
        r = self.resolve("other.test")
        self.assertEqual((r.host_header, r.targets), ("plain.test", (("plain.test", 8448),)))

    def test_no_well_known_srv_of_server_name(self):
        """Without well-known, SRV of the server name; the certificate and Host stay the server name."""
        self.dns.srv["_matrix-fed._tcp.example.test"] = [SrvRecord(0, 0, 8448, "a.test"), SrvRecord(5, 0, 8449, "b.test")]
        r = self.resolve("example.test")
        self.assertEqual((r.host_header, r.tls_name, r.targets), ("example.test", "example.test", (("a.test", 8448), ("b.test", 8449))))
        r = self.resolve("nothing.test")
        self.assertEqual(r.targets, (("nothing.test", 8448),))

    def test_invalid_well_known_falls_back(self):
        """Non-200, bad JSON, missing or invalid m.server: treated as no delegation."""
        for i, answer in enumerate([
            WellKnownResponse(404, b"{}"),
            WellKnownResponse(200, b"not json"),
            WellKnownResponse(200, b"{}"),
            WellKnownResponse(200, b'{"m.server": "bad name!"}'),
            WellKnownResponse(200, b'["x"]'),
        ]):
            host = f"h{i}.test"
            self.wk.answers[host] = answer
            self.assertEqual(self.resolve(host).targets, ((host, 8448),))

    def test_success_cached_per_cache_control(self):
        """A valid answer is cached for max-age (capped at 48h), 24h by default."""
        self.wk.answers["example.test"] = ok("d.test:1", "public, max-age=600")
        self.resolve("example.test")
        self.clock.advance(599)
        self.resolve("example.test")
        self.assertEqual(len(self.wk.fetches), 1)
        self.clock.advance(2)
        self.resolve("example.test")
        self.assertEqual(len(self.wk.fetches), 2)
        self.assertEqual(well_known_ttl(None), 24 * 3600)
        self.assertEqual(well_known_ttl("max-age=99999999"), 48 * 3600)
        self.assertEqual(well_known_ttl("no-store"), 0)

    def test_errors_back_off(self):
        """Fetch failures are cached for a time that doubles per failure, up to an hour."""
        self.resolve("down.test")
        waits = []
        for _ in range(7):
            before = len(self.wk.fetches)
            waited = 0
            while len(self.wk.fetches) == before:
                self.clock.advance(10)
                waited += 10
                self.resolve("down.test")
            waits.append(waited)
        self.assertEqual(waits, [120, 240, 480, 960, 1920, 3600, 3600])

    def test_invalid_answer_cached_an_hour(self):
        """An invalid answer is not asked again for an hour."""
        self.wk.answers["bad.test"] = WellKnownResponse(500, b"")
        self.resolve("bad.test")
        self.clock.advance(3599)
        self.resolve("bad.test")
        self.assertEqual(len(self.wk.fetches), 1)
        self.clock.advance(2)
        self.resolve("bad.test")
        self.assertEqual(len(self.wk.fetches), 2)


class SrvOrderTests(unittest.TestCase):
    def test_priority_then_weight(self):
        """Lower priority first; within a priority, the weighted draw picks the order."""
        records = [SrvRecord(10, 1, 1, "c"), SrvRecord(0, 1, 1, "a"), SrvRecord(0, 3, 1, "b")]
        self.assertEqual([r.target for r in order_srv_records(records, lambda: 0.0)], ["a", "b", "c"])
        self.assertEqual([r.target for r in order_srv_records(records, lambda: 0.9)], ["b", "a", "c"])

    def test_dot_target_means_none(self):
        """A target of '.' means the service is not offered."""
        self.assertEqual(order_srv_records([SrvRecord(0, 0, 0, ".")], lambda: 0.0), [])

    def test_parse_well_known_large_body(self):
        """Oversized bodies are invalid."""
        self.assertIsNone(parse_well_known(WellKnownResponse(200, b" " * 60000 + b'{"m.server":"a.test"}')))
