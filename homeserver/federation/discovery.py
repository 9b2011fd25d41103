"""Server discovery: from a server name to where to connect and what to ask for.

Spec: server-server-api "Resolving server names". IP literal; explicit
port; ``/.well-known/matrix/server`` delegation (cached per the spec's
rules: ``Cache-Control`` max-age, default 24 hours, at most 48 hours;
errors cached with exponential backoff up to an hour), then SRV
``_matrix-fed._tcp`` and the deprecated ``_matrix._tcp``, then port 8448.

DNS and the well-known fetch are interfaces (:class:`DnsResolver`,
:class:`WellKnownFetcher`) so the decisions are tested with fakes and a fake
clock; :mod:`homeserver.http.federation_client` has the real ones.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import re
from typing import Any, Callable, Optional, Protocol, Sequence

import attrs

from homeserver.core.ids import parse_server_name

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_TTL = 24 * 3600.0
WELL_KNOWN_MAX_TTL = 48 * 3600.0
#: An answer that is not a valid delegation (non-200, bad JSON...) is cached this long.
WELL_KNOWN_INVALID_TTL = 3600.0
#: A fetch that failed outright (no answer) is cached for this, doubling per
#: consecutive failure, up to WELL_KNOWN_INVALID_TTL.
WELL_KNOWN_ERROR_INITIAL_TTL = 120.0
WELL_KNOWN_MAX_BODY = 50 * 1024


@attrs.frozen
class SrvRecord:
    """One DNS SRV answer."""

    priority: int
    weight: int
    port: int
    target: str


@attrs.frozen
class WellKnownResponse:
    """What ``GET https://<host>/.well-known/matrix/server`` returned (after redirects)."""

    code: int
    body: bytes
    cache_control: Optional[str] = None


class DnsResolver(Protocol):
    """The DNS lookups discovery needs."""

    async def lookup_srv(self, name: str) -> list[SrvRecord]:
        """SRV records of ``name``; empty when there are none."""
        ...

    async def lookup_addresses(self, host: str) -> list[str]:
        """IPv6/IPv4 addresses of ``host`` (CNAMEs followed); raises if none."""
        ...


class WellKnownFetcher(Protocol):
    """Fetches a host's ``/.well-known/matrix/server``; raises when there is no answer at all."""

    async def fetch(self, hostname: str) -> WellKnownResponse: ...


@attrs.frozen
class ResolvedServer:
    """Where to send requests for a server name."""

    server_name: str
    #: The ``Host`` header.
    host_header: str
    #: The name the certificate must be valid for (an IP for IP literals).
    tls_name: str
    #: ``(host, port)`` pairs to try in order; hosts still need A/AAAA lookups
    #: unless they are IP literals.
    targets: tuple[tuple[str, int], ...]


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` (``1.2.3.4`` or ``[::1]``) is an IP literal."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def unbracket(host: str) -> str:
    """``[::1]`` -> ``::1``; other hosts unchanged."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def order_srv_records(records: Sequence[SrvRecord], rand: Callable[[], float]) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority, weighted random within a priority.

    A lone record with target ``.`` means "no service here": nothing is returned.
    """
    usable = [r for r in records if r.target not in (".", "")]
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        group = [r for r in usable if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                chosen = group[0]
            else:
                point = rand() * total
                acc = 0.0
                chosen = group[-1]
                for r in group:
                    acc += r.weight
                    if point < acc:
                        chosen = r
                        break
            out.append(chosen)
            group.remove(chosen)
    return out


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def well_known_ttl(cache_control: Optional[str]) -> float:
    """How long to cache a valid well-known answer, from its ``Cache-Control``."""
    if cache_control:
        lowered = cache_control.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return 0.0
        m = _MAX_AGE.search(cache_control)
        if m:
            return min(float(m.group(1)), WELL_KNOWN_MAX_TTL)
    return WELL_KNOWN_DEFAULT_TTL


def parse_well_known(response: WellKnownResponse) -> Optional[str]:
    """The delegated server name of a well-known answer, or None if invalid."""
    if response.code != 200 or len(response.body) > WELL_KNOWN_MAX_BODY:
        return None
    try:
        obj = json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    server = obj.get("m.server")
    if not isinstance(server, str):
        return None
    try:
        parse_server_name(server)
    except ValueError:
        return None
    return server


@attrs.define
class _CacheEntry:
    delegated: Optional[str]
    expires_at: float


class ServerResolver:
    """Resolves server names, caching well-known answers in memory."""

    def __init__(
        self,
        clock: Any,
        dns: DnsResolver,
        well_known: WellKnownFetcher,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._dns = dns
        self._well_known = well_known
        self._rand = rand
        self._cache: dict[str, _CacheEntry] = {}
        self._failures: dict[str, int] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        """Where to connect for ``server_name`` (ValueError if it is not a server name)."""
        host, port = parse_server_name(server_name)
        if is_ip_literal(host):
            return ResolvedServer(server_name, server_name, unbracket(host), ((unbracket(host), port or DEFAULT_PORT),))
        if port is not None:
            return ResolvedServer(server_name, server_name, host, ((host, port),))
        delegated = await self.delegated_server(host)
        if delegated is not None:
            dhost, dport = parse_server_name(delegated)
            if is_ip_literal(dhost):
                return ResolvedServer(server_name, delegated, unbracket(dhost), ((unbracket(dhost), dport or DEFAULT_PORT),))
            if dport is not None:
                return ResolvedServer(server_name, delegated, dhost, ((dhost, dport),))
            return ResolvedServer(server_name, dhost, dhost, await self._srv_targets(dhost))
        return ResolvedServer(server_name, host, host, await self._srv_targets(host))

    async def _srv_targets(self, host: str) -> tuple[tuple[str, int], ...]:
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            try:
                records = await self._dns.lookup_srv(service + host)
            except Exception as e:
                logger.info("SRV lookup of %s%s failed: %s", service, host, e)
                records = []
            ordered = order_srv_records(records, self._rand)
            if ordered:
                return tuple((r.target.rstrip("."), r.port) for r in ordered)
        return ((host, DEFAULT_PORT),)

    async def delegated_server(self, host: str) -> Optional[str]:
        """The ``m.server`` of ``host``'s well-known, from cache or fetched."""
        now = self._clock.seconds()
        entry = self._cache.get(host)
        if entry is not None and entry.expires_at > now:
            return entry.delegated
        try:
            response = await self._well_known.fetch(host)
        except Exception as e:
            failures = self._failures.get(host, 0) + 1
            self._failures[host] = failures
            ttl = min(WELL_KNOWN_INVALID_TTL, WELL_KNOWN_ERROR_INITIAL_TTL * 2 ** (failures - 1))
            logger.info("Fetching well-known of %s failed (%s); retrying in %ds", host, e, ttl)
            self._cache[host] = _CacheEntry(None, now + ttl)
            return None
        self._failures.pop(host, None)
        delegated = parse_well_known(response)
        ttl = well_known_ttl(response.cache_control) if delegated is not None else WELL_KNOWN_INVALID_TTL
        self._cache[host] = _CacheEntry(delegated, now + ttl)
        return delegated
