"""Discovery over real TLS: a /.well-known/matrix/server behind a redirect
delegates a port-less server name to another server; the answer is cached."""

from twisted.internet import defer, reactor, ssl
from twisted.names import common, dns, error, server

from homeserver.federation.discovery import ServerResolver
from homeserver.federation.ip_filter import ALLOW_ALL
from homeserver.http.federation_client import HttpWellKnownFetcher, TlsPolicy, TwistedDnsResolver, load_ca_certificates
from homeserver.http.server import JsonResource, RawResponse, make_site
from tests.utils.federation import FederationTestCase, shared_tls


class WellKnownTests(FederationTestCase):
    def well_known_site(self, delegate_to):
        """A TLS site answering /.well-known/matrix/server with a redirect to the real answer."""
        self.hits = []
        resource = JsonResource(reactor)

        async def redirect(request):
            self.hits.append("redirect")
            return RawResponse(302, b"", b"text/plain", ((b"Location", b"/real-well-known"),))

        async def real(request):
            self.hits.append("real")
            body = ('{"m.server": "%s"}' % delegate_to).encode()
            return RawResponse(200, body, b"application/json", ((b"Cache-Control", b"max-age=3600"),))

        resource.register("GET", "/.well-known/matrix/server", redirect)
        resource.register("GET", "/real-well-known", real)
        context = ssl.PrivateCertificate.loadPEM(shared_tls()[1]).options()
        port = reactor.listenSSL(0, make_site(resource, reactor), context, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_delegation_end_to_end(self):
        """wk.test delegates to b.test:PORT; A reaches B by the name wk.test, fetching the well-known once."""
        a, b = self.server("a.test"), self.server("b.test")
        wk_port = self.well_known_site(b.server_name)
        tls = TlsPolicy(verify=True, trust_root=load_ca_certificates(shared_tls()[0]))
        fetcher = HttpWellKnownFetcher(reactor, tls, a.dns, timeout=5, port=wk_port, address_filter=ALLOW_ALL)
        a.client._resolver = ServerResolver(reactor, a.dns, fetcher)
        resolved = await a.client._resolver.resolve("wk.test")
        self.assertEqual((resolved.host_header, resolved.tls_name), (b.server_name, "b.test"))
        body = await a.client.get_json("wk.test", "/_matrix/federation/v1/version")
        self.assertEqual(body["server"]["name"], "Estuary")
        self.assertEqual(self.hits, ["redirect", "real"])

    async def test_well_known_with_bad_certificate_ignored(self):
        """A well-known served with an untrusted certificate is treated as absent."""
        a = self.server("a.test")
        wk_port = self.well_known_site("elsewhere.test:1")
        fetcher = HttpWellKnownFetcher(reactor, TlsPolicy(verify=True), a.dns, timeout=5, port=wk_port, address_filter=ALLOW_ALL)
        resolver = ServerResolver(reactor, a.dns, fetcher)
        resolved = await resolver.resolve("wk.test")
        self.assertEqual(resolved.targets, (("wk.test", 8448),))
        self.assertEqual(self.hits, [])

    async def test_default_filter_refuses_loopback_well_known(self):
        """With the default address filter, a well-known on a loopback address is never fetched."""
        a = self.server("a.test")
        wk_port = self.well_known_site("elsewhere.test:1")
        tls = TlsPolicy(verify=True, trust_root=load_ca_certificates(shared_tls()[0]))
        resolver = ServerResolver(reactor, a.dns, HttpWellKnownFetcher(reactor, tls, a.dns, timeout=5, port=wk_port))
        self.assertEqual((await resolver.resolve("wk.test")).targets, (("wk.test", 8448),))
        self.assertEqual(self.hits, [])

    async def test_system_address_lookup(self):
        """The real resolver finds loopback addresses for localhost."""
        addresses = await TwistedDnsResolver(reactor).lookup_addresses("localhost")
        self.assertTrue({"127.0.0.1", "::1"} & set(addresses))


class SrvZone(common.ResolverBase):
    """An authoritative in-memory zone of SRV records for a loopback DNS server."""

    def __init__(self, records):
        super().__init__()
        self.records = records

    def _lookup(self, name, cls, type, timeout):
        key = name.decode("ascii") if isinstance(name, bytes) else name
        if type == dns.SRV and key in self.records:
            answers = [
                dns.RRHeader(name=key, type=dns.SRV, payload=dns.Record_SRV(p, w, port, target), auth=True)
                for p, w, port, target in self.records[key]
            ]
            return defer.succeed((answers, [], []))
        return defer.fail(error.DomainError(name))


class RealSrvTests(FederationTestCase):
    async def test_srv_over_dns(self):
        """TwistedDnsResolver reads SRV answers from a DNS server; a name without records gives none."""
        zone = SrvZone({"_matrix-fed._tcp.example.test": [(10, 5, 8443, "fed.example.test"), (0, 0, 443, "first.example.test")]})
        factory = server.DNSServerFactory(authorities=[zone])
        port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        resolver = TwistedDnsResolver(reactor, servers=[("127.0.0.1", port.getHost().port)])
        records = await resolver.lookup_srv("_matrix-fed._tcp.example.test")
        self.assertEqual(
            sorted((r.priority, r.weight, r.port, r.target) for r in records),
            [(0, 0, 443, "first.example.test"), (10, 5, 8443, "fed.example.test")],
        )
        self.assertEqual(await resolver.lookup_srv("_matrix-fed._tcp.nothing.test"), [])
        resolved = await ServerResolver(reactor, resolver, _NoWellKnown()).resolve("example.test")
        self.assertEqual(resolved.targets, (("first.example.test", 443), ("fed.example.test", 8443)))


class _NoWellKnown:
    async def fetch(self, hostname):
        raise OSError("none")
