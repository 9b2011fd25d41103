"""Which IP addresses outbound federation may connect to.

Server names come from other servers (event senders, notary queries,
``/.well-known`` delegations), so without a filter anyone could make this
server connect to its own internal network. Every address a server name
resolves to is checked before connecting; addresses in a blocked range
are skipped unless an allowed range also contains them.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

import attrs

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Loopback, private, link-local, shared, documentation, benchmarking,
#: multicast and reserved ranges: nothing a public homeserver lives on.
DEFAULT_BLOCKED_RANGES = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings to networks; ValueError naming the bad one."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"not an IP range: {v!r}") from None
    return tuple(out)


@attrs.frozen
class AddressFilter:
    """Blocked ranges, with exceptions."""

    blocked: tuple[Network, ...] = attrs.field(factory=lambda: parse_networks(DEFAULT_BLOCKED_RANGES))
    allowed: tuple[Network, ...] = ()

    def permits(self, address: str) -> bool:
        """Whether connecting to ``address`` (an IP, IPv6 without brackets) is allowed."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        candidates = [ip] if mapped is None else [ip, mapped]
        if any(c in net for c in candidates for net in self.allowed if c.version == net.version):
            return True
        return not any(c in net for c in candidates for net in self.blocked if c.version == net.version)


#: For tests and private federations: every address allowed.
ALLOW_ALL = AddressFilter(blocked=(), allowed=())
