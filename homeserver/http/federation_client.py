"""Outbound server-server HTTP: discovery, TLS, X-Matrix signing, JSON.

:class:`FederationClient` sends signed JSON requests to a server name. Each
request resolves the name (:class:`homeserver.federation.discovery.ServerResolver`),
connects to the resolved targets in order with TLS checked against the
name the spec says (system CAs, or configured ones; never skipped unless
the testing-only ``federation.verify_certificates: false`` is set), sends
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
from treq.client import HTTPClient
from OpenSSL import SSL
from twisted.internet import defer, ssl, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from homeserver.core.canonical_json import decode_json
from homeserver.federation.discovery import (
    ResolvedServer,
    ServerResolver,
    SrvRecord,
    WellKnownResponse,
    is_ip_literal,
)
from homeserver.federation.errors import HttpResponseError, RequestSendFailed
from homeserver.federation.request_auth import sign_request

logger = logging.getLogger(__name__)

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
    """SRV through ``twisted.names``; addresses through the system's getaddrinfo."""

    def __init__(self, reactor: Any) -> None:
        from twisted.names import client

        self._reactor = reactor
        self._resolver = client.createResolver(reactor=reactor)

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        from twisted.names import dns, error

        try:
            answers, _, _ = await self._resolver.lookupService(name)
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
    """``GET https://<host>/.well-known/matrix/server``, following redirects (at most 5)."""

    def __init__(self, reactor: Any, tls: TlsPolicy, timeout: float = 10.0) -> None:
        from twisted.web.client import BrowserLikeRedirectAgent

        self._reactor = reactor
        self._timeout = timeout
        agent = Agent(reactor, contextFactory=tls.web_policy() if tls else BrowserLikePolicyForHTTPS())
        self._http = HTTPClient(BrowserLikeRedirectAgent(agent, redirectLimit=5))

    async def fetch(self, hostname: str) -> WellKnownResponse:
        d = self._http.get(f"https://{hostname}/.well-known/matrix/server", allow_redirects=False,
                           headers={b"User-Agent": [USER_AGENT]})
        d.addTimeout(self._timeout, self._reactor)
        response = await d
        body_d = treq.content(response)
        body_d.addTimeout(self._timeout, self._reactor)
        body = await body_d
        cache = response.headers.getRawHeaders(b"Cache-Control")
        return WellKnownResponse(response.code, body, cache[0].decode("latin-1") if cache else None)


# -- connecting --------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class _ResolvedEndpoint:
    """Connects to the first reachable address of a resolved server, over TLS."""

    def __init__(self, reactor: Any, dns: Any, resolved: ResolvedServer, tls: TlsPolicy, timeout: float) -> None:
        self._reactor = reactor
        self._dns = dns
        self._resolved = resolved
        self._tls = tls
        self._timeout = timeout

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
    ) -> None:
        self._reactor = reactor
        self._server_name = server_name
        self._signing_key = signing_key
        self._resolver = resolver
        self._dns = dns
        self._tls = tls
        self._backoff = backoff
        self._timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 5
        self._pool.retryAutomatically = False

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
            await self._backoff.check(destination)
        try:
            result = await self._send(method, destination, path, args, data, timeout or self._timeout)
        except RequestSendFailed:
            if track_backoff:
                await self._record(destination, ok=False)
            raise
        except HttpResponseError as e:
            if track_backoff:
                await self._record(destination, ok=e.code < 500)
            raise
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
            _EndpointFactory(_ResolvedEndpoint(self._reactor, self._dns, resolved, self._tls, timeout)),
            pool=self._pool,
        )
        http = HTTPClient(agent)
        url = b"matrix-federation://" + _netloc(destination) + uri.encode("ascii")

        async def exchange() -> tuple[int, bytes]:
            response = await http.request(method, url, headers=headers, data=body, allow_redirects=False)
            content = await _read_limited(response)
            return response.code, content

        d = defer.ensureDeferred(exchange())
        d.addTimeout(timeout, self._reactor)
        try:
            code, content = await d
        except defer.TimeoutError:
            raise RequestSendFailed(destination, f"timed out after {timeout}s") from None
        except HttpResponseError:
            raise
        except Exception as e:
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


async def _read_limited(response: Any) -> bytes:
    chunks: list[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > MAX_RESPONSE_BYTES:
            raise RequestSendFailed("?", "response too large")
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

