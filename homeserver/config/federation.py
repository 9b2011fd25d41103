"""The ``federation`` config section (issue 8): keys, discovery, TLS, sender.

Keys are documented in ``sample_config.yaml`` (section ``federation``). The signing key file
itself is the top-level ``signing_key_path``; this section adds what the
server-server API needs around it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping, Optional

import attrs

from homeserver.config._base import ConfigError, Reader

_KEY_ID = r"ed25519:[A-Za-z0-9_]+"
_B64 = r"[A-Za-z0-9+/\-_]+"


@attrs.frozen
class OldSigningKey:
    """A verify key we no longer sign with, still published until it is forgotten."""

    key_id: str
    key_base64: str
    expired_ts: int


@attrs.frozen
class TrustedKeyServer:
    """A notary we ask for other servers' keys, with the keys it must sign with."""

    server_name: str
    #: key ID -> unpadded base64 verify key. Empty means "accept whatever key
    #: it uses" (refused by the parser: a notary must be pinned).
    verify_keys: Mapping[str, str]


@attrs.frozen
class FederationConfig:
    """``federation``: everything about talking to other homeservers."""

    #: Verify remote TLS certificates. ``False`` is for tests only.
    verify_certificates: bool = True
    #: A PEM file of CA certificates to trust instead of the system's.
    ca_certificates_path: Optional[str] = None
    #: Old verify keys published under ``old_verify_keys``.
    old_signing_keys: tuple[OldSigningKey, ...] = ()
    #: How long the keys we publish are valid (``valid_until_ts = now + this``).
    key_refresh_interval_ms: int = 24 * 3600 * 1000
    #: Notary servers asked for keys when a server cannot be reached directly.
    trusted_key_servers: tuple[TrustedKeyServer, ...] = ()
    #: Timeout of one outbound federation request.
    request_timeout_seconds: float = 60.0
    #: Per-destination backoff after a failed request or transaction.
    destination_min_retry_interval_ms: int = 10 * 60 * 1000
    destination_max_retry_interval_ms: int = 24 * 3600 * 1000
    destination_retry_multiplier: float = 2.0
    #: How often a federation sender looks in PostgreSQL for queued work it
    #: was not told about (enqueued by another process, or left by a crash).
    sender_poll_interval_seconds: float = 10.0
    #: Past this many PDUs queued for one destination, keep only the newest per room.
    sender_catch_up_threshold: int = 1000
    #: CIDR ranges outbound federation never connects to (None: the defaults
    #: of ``homeserver.federation.ip_filter``), and exceptions to them.
    ip_range_blocklist: Optional[tuple[str, ...]] = None
    ip_range_allowlist: tuple[str, ...] = ()


def parse_federation(r: Reader) -> FederationConfig:
    """Parse the ``federation`` section."""
    old_keys = []
    for key_id, kr in r.mapping_items("old_signing_keys"):
        if not _matches(_KEY_ID, key_id):
            raise ConfigError(kr.path, "key IDs look like ed25519:<version> with version in [A-Za-z0-9_]")
        old_keys.append(
            OldSigningKey(
                key_id=key_id,
                key_base64=kr.string("key", pattern=_B64, what="unpadded base64"),
                expired_ts=kr.integer("expired_ts", minimum=0),
            )
        )
        kr.finish()

    servers = []
    raw_servers = r.raw("trusted_key_servers", [])
    if not isinstance(raw_servers, list):
        raise ConfigError(r.key_path("trusted_key_servers"), "expected a list")
    for i, item in enumerate(raw_servers):
        sr = Reader(item, f"{r.key_path('trusted_key_servers')}[{i}]", r.unknown)
        name = sr.string("server_name")
        keys: dict[str, str] = {}
        raw_keys = sr.raw("verify_keys", {})
        if not isinstance(raw_keys, dict):
            raise ConfigError(sr.key_path("verify_keys"), "expected a mapping of key ID to key")
        for key_id, value in raw_keys.items():
            if not _matches(_KEY_ID, str(key_id)) or not isinstance(value, str) or not _matches(_B64, value):
                raise ConfigError(sr.key_path("verify_keys"), "expected ed25519:<version>: <unpadded base64 key>")
            keys[key_id] = value
        if not keys:
            raise ConfigError(sr.key_path("verify_keys"), "is required: pin at least one key of the notary")
        servers.append(TrustedKeyServer(server_name=name, verify_keys=keys))
        sr.finish()

    cfg = FederationConfig(
        verify_certificates=r.boolean("verify_certificates", True),
        ca_certificates_path=r.string("ca_certificates_path", None),
        old_signing_keys=tuple(old_keys),
        key_refresh_interval_ms=r.integer("key_refresh_interval_ms", 24 * 3600 * 1000, minimum=3600 * 1000),
        trusted_key_servers=tuple(servers),
        request_timeout_seconds=r.number("request_timeout_seconds", 60.0, minimum=0.1),
        destination_min_retry_interval_ms=r.integer("destination_min_retry_interval_ms", 10 * 60 * 1000, minimum=1),
        destination_max_retry_interval_ms=r.integer("destination_max_retry_interval_ms", 24 * 3600 * 1000, minimum=1),
        destination_retry_multiplier=r.number("destination_retry_multiplier", 2.0, minimum=1.0),
        sender_poll_interval_seconds=r.number("sender_poll_interval_seconds", 10.0, minimum=0.01),
        sender_catch_up_threshold=r.integer("sender_catch_up_threshold", 1000, minimum=1),
        ip_range_blocklist=_cidrs(r, "ip_range_blocklist", None),
        ip_range_allowlist=_cidrs(r, "ip_range_allowlist", ()),
    )
    if cfg.destination_max_retry_interval_ms < cfg.destination_min_retry_interval_ms:
        raise ConfigError(r.key_path("destination_max_retry_interval_ms"), "must be at least destination_min_retry_interval_ms")
    return cfg


def _cidrs(r: Reader, key: str, default: Any) -> Any:
    values = r.string_list(key, default)
    if values is default:
        return default
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ConfigError(r.key_path(key), f"{v!r} is not an IP range like 10.0.0.0/8")
    return tuple(values)


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


FEDERATION_SECTIONS: dict[str, Any] = {"federation": parse_federation}
