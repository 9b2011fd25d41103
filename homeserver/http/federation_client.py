"""Outbound server-server HTTP: discovery, TLS, X-Matrix signing, JSON.

:class:`FederationClient` sends signed JSON requests to a server name. Each
request resolves the name (:class:`homeserver.federation.discovery.ServerResolver`),
connects to the resolved targets in order with TLS checked against the
name the spec says (system CAs, or configured ones; never skipped unless
the testing-only ``federation.verify_certificates: false`` is set), never
to addresses in ``federation.ip_range_blocklist`` (internal networks by
default), sends
the ``Host`` header the spec says, and maps every failure to
:mod:`homeserver.federation.errors`. Destinations that keep failing are
backed off (:class:`homeserver.federation.destinations.DestinationBackoff`).

The real DNS resolver and well-known fetcher live here too.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, Mapping, Optional
from urllib.parse import urlencode

import attrs
import treq
from prometheus_client import Counter
from treq.client import HTTPClient
from OpenSSL import SSL
from twisted.internet import defer, ssl, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.web.error import SchemeNotSupported
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from homeserver.core.canonical_json import decode_json
from homeserver.federation.discovery import (
    WELL_KNOWN_MAX_BODY,
    ResolvedServer,
    ServerResolver,
    SrvRecord,
    WellKnownResponse,
    is_ip_literal,
    unbracket,
)
from homeserver.federation.ip_filter import AddressFilter
from homeserver.federation.errors import HttpResponseError, NotRetryingDestination, RequestSendFailed
from homeserver.federation.request_auth import sign_request

logger = logging.getLogger(__name__)

OUTBOUND_REQUESTS = Counter(
    "estuary_federation_client_requests_total",
    "Outbound federation requests by method and outcome (2xx/4xx/5xx status class, failed, backoff)",
    ["method", "outcome"],
)

USER_AGENT = b"Estuary"
#: Largest response body accepted from a remote server.
MAX_RESPONSE_BYTES = 50 * 1024 * 1024


# -- TLS -------------------------------------------------------------------


def load_ca_certificates(path: str) -> Any:
    """A Twisted trust root made of every certificate in a PEM file."""
    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----END CERTIFICATE-----"
    certs = []
    for chunk in data.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in chunk:
            certs.append(ssl.Certificate.loadPEM(chunk + marker + b"\n"))
    if not certs:
        raise ValueError(f"no certificates in {path}")
    return ssl.trustRootFromCertificates(certs)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """TLS without certificate checks (testing only), still sending SNI."""

    def __init__(self, hostname: str) -> None:
        self._ctx = ssl.CertificateOptions(verify=False).getContext()
        self._sni = None if is_ip_literal(hostname) else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        if self._sni:
            conn.set_tlsext_host_name(self._sni)
        conn.set_connect_state()
        return conn


@attrs.frozen
class TlsPolicy:
    """How to check remote certificates."""

    verify: bool = True
    #: A trust root from :func:`load_ca_certificates`; None: the system's CAs.
    trust_root: Any = None

    @classmethod
    def from_config(cls, verify: bool, ca_certificates_path: Optional[str]) -> "TlsPolicy":
        root = load_ca_certificates(ca_certificates_path) if ca_certificates_path else None
        return cls(verify=verify, trust_root=root)

    def creator_for(self, tls_name: str) -> IOpenSSLClientConnectionCreator:
        """The connection creator checking a certificate for ``tls_name``
        (a host name, or an IP address for IP literals: then no SNI is sent)."""
        if not self.verify:
            return _UnverifiedCreator(tls_name)
        if self.trust_root is not None:
            return ssl.optionsForClientTLS(tls_name, trustRoot=self.trust_root)
        return ssl.optionsForClientTLS(tls_name)

    def web_policy(self) -> IPolicyForHTTPS:
        """The same rules as an ``IPolicyForHTTPS`` for plain https:// URLs (well-known)."""
        return _WebPolicy(self)


@implementer(IPolicyForHTTPS)
class _WebPolicy:
    def __init__(self, policy: TlsPolicy) -> None:
        self._policy = policy

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return self._policy.creator_for(hostname.decode("ascii"))


# -- DNS and well-known ------------------------------------------------------


class TwistedDnsResolver:
    """SRV through ``twisted.names`` (the system's resolv.conf, or ``servers``);
    addresses through the system's getaddrinfo."""

    def __init__(
        self, reactor: Any, resolv_conf: str = "/etc/resolv.conf", servers: Optional[list[tuple[str, int]]] = None
    ) -> None:
        self._reactor = reactor
        self._resolv_conf = resolv_conf
        self._servers = servers
        self._resolver: Any = None

    def _names_resolver(self) -> Any:
        # Created on first use: with resolv.conf it re-reads the file on a timer.
        if self._resolver is None:
            from twisted.names import client

            if self._servers:
                self._resolver = client.Resolver(servers=self._servers, reactor=self._reactor)
            else:
                self._resolver = client.Resolver(resolv=self._resolv_conf, reactor=self._reactor)
        return self._resolver

    def close(self) -> None:
        """Stop re-reading resolv.conf."""
        call = getattr(self._resolver, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        from twisted.names import dns, error

        try:
            answers, _, _ = await self._names_resolver().lookupService(name)
        except (error.DNSNameError, error.DNSNotImplementedError):
            return []
        except error.DomainError:
            return []
        out = []
        for rr in answers:
            if rr.type == dns.SRV and rr.name.name.decode("ascii").lower() == name.lower():
                p = rr.payload
                out.append(SrvRecord(p.priority, p.weight, p.port, p.target.name.decode("ascii")))
        return out

    async def lookup_addresses(self, host: str) -> list[str]:
        infos = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM
        )
        seen: list[str] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
                seen.append(sockaddr[0])
        if not seen:
            raise ConnectError(f"no addresses for {host}")
        return seen


class HttpWellKnownFetcher:
    """``GET https://<host>/.well-known/matrix/server``, following at most 5 redirects.

    Host names are resolved through ``dns`` like every federation
    connection; certificates are checked with ``tls``. ``port`` is for tests
    (the spec's URL has none, i.e. 443).
    """

    def __init__(
        self,
        reactor: Any,
        tls: TlsPolicy,
        dns: Any,
        timeout: float = 10.0,
        port: int = 443,
        address_filter: AddressFilter = AddressFilter(),
    ) -> None:
        from twisted.web.client import BrowserLikeRedirectAgent

        self._reactor = reactor
        self._timeout = timeout
        self._port = port
        agent = Agent.usingEndpointFactory(reactor, _DnsEndpointFactory(reactor, dns, tls, timeout, address_filter))
        self._http = HTTPClient(BrowserLikeRedirectAgent(agent, redirectLimit=5))

    async def fetch(self, hostname: str) -> WellKnownResponse:
        netloc = hostname if self._port == 443 else f"{hostname}:{self._port}"

        async def get() -> WellKnownResponse:
            response = await self._http.get(
                f"https://{netloc}/.well-known/matrix/server", allow_redirects=False,
                headers={b"User-Agent": [USER_AGENT]},
            )
            body = await _read_limited(response, WELL_KNOWN_MAX_BODY + 1)
            cache = response.headers.getRawHeaders(b"Cache-Control")
            return WellKnownResponse(response.code, body, cache[0].decode("latin-1") if cache else None)

        d = defer.ensureDeferred(get())
        d.addTimeout(self._timeout, self._reactor)
        return await d


class _DnsEndpointFactory:
    """Endpoints for plain ``https://host[:port]`` URLs, resolved through the injected DNS."""

    def __init__(self, reactor: Any, dns: Any, tls: TlsPolicy, timeout: float, address_filter: AddressFilter) -> None:
        self._reactor = reactor
        self._dns = dns
        self._tls = tls
        self._timeout = timeout
        self._filter = address_filter

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise SchemeNotSupported(f"only https is allowed, not {uri.scheme!r}")
        host = unbracket(uri.host.decode("ascii"))
        resolved = ResolvedServer(host, host, host, ((host, uri.port),))
        return _ResolvedEndpoint(self._reactor, self._dns, resolved, self._tls, self._timeout, self._filter)


# -- connecting --------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class _ResolvedEndpoint:
    """Connects to the first reachable address of a resolved server, over TLS."""

    def __init__(
        self, reactor: Any, dns: Any, resolved: ResolvedServer, tls: TlsPolicy, timeout: float, address_filter: AddressFilter
    ) -> None:
        self._reactor = reactor
        self._dns = dns
        self._resolved = resolved
        self._tls = tls
        self._timeout = timeout
        self._filter = address_filter

    def connect(self, factory: Any) -> "defer.Deferred[Any]":
        return defer.ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        errors = []
        creator = self._tls.creator_for(self._resolved.tls_name)
        for host, port in self._resolved.targets:
            try:
                addresses = [host] if is_ip_literal(host) else await self._dns.lookup_addresses(host)
            except Exception as e:
                errors.append(f"{host}: {e}")
                continue
            for address in addresses:
                if not self._filter.permits(address):
                    errors.append(f"{address}: address blocked by federation.ip_range_blocklist")
                    continue
                cls = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
                endpoint = wrapClientTLS(creator, cls(self._reactor, address, port, timeout=self._timeout))
                try:
                    return await endpoint.connect(factory)
                except Exception as e:
                    errors.append(f"{address}:{port}: {e}")
        raise ConnectError("; ".join(errors) or "no targets")


class _EndpointFactory:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return self._endpoint


# -- the client --------------------------------------------------------------


class FederationClient:
    """Signed JSON requests to other homeservers by server name."""

    def __init__(
        self,
        reactor: Any,
        server_name: str,
        signing_key: Any,
        resolver: ServerResolver,
        dns: Any,
        tls: TlsPolicy,
        backoff: Any = None,
        timeout: float = 60.0,
        address_filter: AddressFilter = AddressFilter(),
    ) -> None:
        self._reactor = reactor
        self._filter = address_filter
        self._server_name = server_name
        self._signing_key = signing_key
        self._resolver = resolver
        self._dns = dns
        self._tls = tls
        self._backoff = backoff
        self._timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 5
        # A pooled connection the peer closed while idle is retried once for
        # GET-like requests only (Twisted's rule); transactions (PUT) are
        # retried by the sender, with the same ID.
        self._pool.retryAutomatically = True

    async def close(self) -> None:
        """Close pooled connections."""
        await self._pool.closeCachedConnections()

    async def get_json(self, destination: str, path: str, args: Optional[Mapping[str, Any]] = None, **kw: Any) -> Any:
        """``GET`` and parse the JSON answer. See :meth:`request` for keywords."""
        return await self.request("GET", destination, path, args=args, **kw)

    async def put_json(self, destination: str, path: str, data: Any, args: Optional[Mapping[str, Any]] = None, **kw: Any) -> Any:
        """``PUT`` a JSON body and parse the JSON answer."""
        return await self.request("PUT", destination, path, args=args, data=data, **kw)

    async def post_json(self, destination: str, path: str, data: Any, args: Optional[Mapping[str, Any]] = None, **kw: Any) -> Any:
        """``POST`` a JSON body and parse the JSON answer."""
        return await self.request("POST", destination, path, args=args, data=data, **kw)

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        args: Optional[Mapping[str, Any]] = None,
        data: Any = None,
        timeout: Optional[float] = None,
        ignore_backoff: bool = False,
        track_backoff: bool = True,
    ) -> Any:
        """Send one signed request; returns the parsed JSON body of a 2xx answer.

        ``path`` is already percent-encoded (``/_matrix/federation/v1/...``);
        ``args`` become the query string (lists repeat the parameter).
        Raises :class:`NotRetryingDestination` (backing off; unless
        ``ignore_backoff``), :class:`RequestSendFailed` (no usable answer) or
        :class:`HttpResponseError` (non-2xx). Connection failures and 5xx
        answers extend the destination's backoff; any other answer clears it
        (unless ``track_backoff`` is false: the caller records outcomes).
        """
        if self._backoff is not None and not ignore_backoff:
            try:
                await self._backoff.check(destination)
            except NotRetryingDestination:
                OUTBOUND_REQUESTS.labels(method, "backoff").inc()
                raise
        try:
            result = await self._send(method, destination, path, args, data, timeout or self._timeout)
        except RequestSendFailed:
            OUTBOUND_REQUESTS.labels(method, "failed").inc()
            if track_backoff:
                await self._record(destination, ok=False)
            raise
        except HttpResponseError as e:
            OUTBOUND_REQUESTS.labels(method, f"{e.code // 100}xx").inc()
            if track_backoff:
                await self._record(destination, ok=e.code < 500)
            raise
        OUTBOUND_REQUESTS.labels(method, "2xx").inc()
        if track_backoff:
            await self._record(destination, ok=True)
        return result

    async def _record(self, destination: str, ok: bool) -> None:
        if self._backoff is None:
            return
        try:
            if ok:
                await self._backoff.record_success(destination)
            else:
                await self._backoff.record_failure(destination)
        except Exception:
            logger.exception("Could not record the outcome of a request to %s", destination)

    async def _send(self, method: str, destination: str, path: str, args: Optional[Mapping[str, Any]], data: Any, timeout: float) -> Any:
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        uri = path
        if args:
            uri += "?" + urlencode({k: v for k, v in args.items()}, doseq=True)
        try:
            resolved = await self._resolver.resolve(destination)
        except Exception as e:
            raise RequestSendFailed(destination, f"cannot resolve: {e}") from None
        body = None if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        auth = sign_request(self._server_name, self._signing_key, destination, method, uri, data)
        headers = Headers({
            b"Host": [resolved.host_header.encode("ascii")],
            b"Authorization": [auth.encode("latin-1")],
            b"User-Agent": [USER_AGENT],
        })
        if body is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
        agent = Agent.usingEndpointFactory(
            self._reactor,
            _EndpointFactory(_ResolvedEndpoint(self._reactor, self._dns, resolved, self._tls, timeout, self._filter)),
            pool=self._pool,
        )
        http = HTTPClient(agent)
        url = b"matrix-federation://" + _netloc(destination) + uri.encode("ascii")

        async def exchange() -> tuple[int, bytes]:
            response = await http.request(method, url, headers=headers, data=body, allow_redirects=False)
            content = await _read_limited(response)
            return response.code, content

        timed_out = []

        def on_timeout(result: Any, after: float) -> Any:
            timed_out.append(after)
            return result

        d = defer.ensureDeferred(exchange())
        d.addTimeout(timeout, self._reactor, onTimeoutCancel=on_timeout)
        try:
            code, content = await d
        except Exception as e:
            if timed_out:
                raise RequestSendFailed(destination, f"timed out after {timeout}s") from None
            if isinstance(e, HttpResponseError):
                raise
            raise RequestSendFailed(destination, f"{type(e).__name__}: {e}") from None
        try:
            parsed = decode_json(content, strict=False) if content else None
        except ValueError:
            parsed = None
            if 200 <= code < 300:
                raise RequestSendFailed(destination, f"{code} answer is not JSON") from None
        if not 200 <= code < 300:
            errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
            raise HttpResponseError(destination, code, parsed, errcode if isinstance(errcode, str) else None)
        return parsed


def _netloc(destination: str) -> bytes:
    # The URI is only a pool key and a request target for the Agent; the
    # connection goes where the resolver said. Server names are ASCII.
    return destination.encode("ascii")


class ResponseTooLarge(Exception):
    """A response body exceeded the size limit."""


async def _read_limited(response: Any, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise ResponseTooLarge(f"response larger than {limit} bytes")
        chunks.append(data)

    await treq.collect(response, collect)
    return b"".join(chunks)


__all__ = [
    "FederationClient",
    "HttpWellKnownFetcher",
    "TlsPolicy",
    "TwistedDnsResolver",
    "load_ca_certificates",
]

