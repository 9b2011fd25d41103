"""Real federation endpoints on loopback for integration tests.

:func:`make_tls_certificate` writes one self-signed certificate valid for
``localhost``, ``*.test`` names given and ``127.0.0.1``; tests trust it as
their only CA, so TLS verification really runs. :class:`LocalHomeserver`
wires the real keyring, authenticator, key server and federation client of
one server name around a shared test database and serves them over TLS on
an ephemeral loopback port. :class:`FakeDns` resolves the names a test
allows to 127.0.0.1 and knows no SRV records.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from typing import Any, Iterable, Optional

import psycopg2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, ssl
from twisted.trial import unittest

from homeserver.core.signing import generate_signing_key
from homeserver.federation.backoff import BackoffPolicy
from homeserver.federation.destinations import DestinationBackoff
from homeserver.federation.discovery import ServerResolver
from homeserver.federation.ip_filter import ALLOW_ALL, AddressFilter
from homeserver.federation.keyring import Keyring
from homeserver.federation.keys import LocalKeys
from homeserver.http.federation_client import FederationClient, TlsPolicy, load_ca_certificates
from homeserver.http.server import JsonResource, make_site, parse_json_value
from homeserver.rest.federation.auth import FederationAuthenticator
from homeserver.rest.federation.keys import register_key_server, register_version
from storage.stores.federation import FederationQueueStore
from storage.database import Database
from storage.migrations import prepare_database
from storage.stores.server_keys import ServerKeyStore
from tests.utils.services import create_test_database

TEST_NAMES = ("localhost", "a.test", "b.test", "c.test", "d.test", "wk.test")


def make_tls_certificate(names: Iterable[str] = TEST_NAMES) -> tuple[str, bytes]:
    """``(cert_path, key_and_cert_pem)``: a self-signed CA/server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "estuary-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    d = tempfile.mkdtemp(prefix="estuary-tls-")
    path = os.path.join(d, "ca.pem")
    with open(path, "wb") as f:
        f.write(cert_pem)
    return path, key_pem + cert_pem


class FakeDns:
    """Resolves allowed host names to 127.0.0.1; no SRV records."""

    def __init__(self, hosts: Iterable[str] = TEST_NAMES) -> None:
        self.hosts = set(hosts)

    async def lookup_srv(self, name: str) -> list:
        return []

    async def lookup_addresses(self, host: str) -> list[str]:
        if host not in self.hosts:
            raise OSError(f"fake DNS: no such host {host}")
        return ["127.0.0.1"]


class NoWellKnown:
    """Every well-known fetch fails (tests use explicit ports)."""

    async def fetch(self, hostname: str) -> Any:
        raise OSError("no well-known in tests")


class LocalHomeserver:
    """One server name's federation stack on a loopback TLS port."""

    def __init__(
        self,
        testcase: Any,
        reactor: Any,
        database: Any,
        host: str,
        tls: tuple[str, bytes],
        dns: Optional[FakeDns] = None,
        trusted_key_servers: Iterable[Any] = (),
        key_validity_ms: int = 24 * 3600 * 1000,
        verify_certificates: bool = True,
        backoff_policy: BackoffPolicy = BackoffPolicy(min_interval_ms=200, max_interval_ms=1000, jitter=0.0),
        allow_loopback: bool = True,
    ) -> None:
        self.reactor = reactor
        self.resource = JsonResource(reactor)
        cert_path, key_and_cert = tls
        self._context = ssl.PrivateCertificate.loadPEM(key_and_cert).options()
        self._site = make_site(self.resource, reactor)
        self.port = reactor.listenSSL(0, self._site, self._context, interface="127.0.0.1")
        self.port_number = self.port.getHost().port
        testcase.addCleanup(self.stop_listening)
        self.server_name = f"{host}:{self.port_number}"
        self.signing_key = generate_signing_key()
        self.local_keys = LocalKeys(self.server_name, [self.signing_key])
        self.key_store = ServerKeyStore(database)
        self.queue_store = FederationQueueStore(database)
        self.backoff = DestinationBackoff(reactor, self.queue_store, backoff_policy, jitter=lambda: 0.5)
        self.dns = dns or FakeDns()
        tls_policy = TlsPolicy(verify=verify_certificates, trust_root=load_ca_certificates(cert_path) if verify_certificates else None)
        self.client = FederationClient(
            reactor,
            self.server_name,
            self.signing_key,
            ServerResolver(reactor, self.dns, NoWellKnown()),
            self.dns,
            tls_policy,
            backoff=self.backoff,
            timeout=5.0,
            address_filter=ALLOW_ALL if allow_loopback else AddressFilter(),
        )
        testcase.addCleanup(self.client.close)
        self.keyring = Keyring(
            reactor, self.local_keys, self.key_store, self.client, trusted_key_servers,
            key_validity_ms=key_validity_ms, refetch_after_failure_ms=0,
        )
        self.authenticator = FederationAuthenticator(self.server_name, self.keyring)
        register_key_server(self.resource, self.keyring)
        register_version(self.resource)

    def stop_listening(self) -> Any:
        if self.port is None:
            return None
        port, self.port = self.port, None
        return port.stopListening()

    def listen_again(self) -> None:
        """Listen again on the same port (after :meth:`stop_listening`)."""
        self.port = self.reactor.listenSSL(self.port_number, self._site, self._context, interface="127.0.0.1")


_TLS = None


def shared_tls() -> tuple[str, bytes]:
    """The certificate shared by every federation test (made once per run)."""
    global _TLS
    if _TLS is None:
        _TLS = make_tls_certificate()
    return _TLS


class FederationTestCase(unittest.TestCase):
    """Per-test database (migrated) and helpers to start LocalHomeservers on it."""

    async def asyncSetUp(self):
        self.dsn = create_test_database(self)
        self.db = Database(self.dsn, reactor, pool_size=4)
        self.addCleanup(self.db.close)
        await prepare_database(self.db)

    def setUp(self):
        return defer.ensureDeferred(self.asyncSetUp())

    def server(self, host, database=None, **kw):
        return LocalHomeserver(self, reactor, database or self.db, host, shared_tls(), **kw)

    async def own_database(self):
        """A second database, for a server whose cache must not be shared."""
        db = Database(create_test_database(self), reactor, pool_size=2)
        self.addCleanup(db.close)
        await prepare_database(db)
        return db

    def add_echo(self, hs):
        """An authenticated endpoint answering with the origin and body it saw."""

        async def echo(request, origin):
            return 200, {"origin": origin, "content": parse_json_value(request, allow_empty=True)}

        hs.resource.register("GET", "/_matrix/federation/v1/echo", hs.authenticator.wrap(echo), name="echo")
        hs.resource.register("PUT", "/_matrix/federation/v1/echo", hs.authenticator.wrap(echo), name="echo_put")

    def rows(self, sql, args=()):
        """Rows of a query on the test database, read outside the pool."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()
