"""Config sections of the accounts API (issue 5).

Each parser reads one top-level section of the YAML file through a
:class:`Reader` and returns a frozen object found at
``config.sections[name]``. Keys are documented in
``docs/config-accounts.yaml``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import attrs

from homeserver.config._base import ConfigError, Reader


@attrs.frozen
class RegistrationConfig:
    """``registration``: who may create accounts, and how."""

    enable_registration: bool = False
    registration_requires_token: bool = False
    allow_guest_access: bool = False
    #: Shared secret of ``/_synapse/admin/v1/register``; None disables it.
    registration_shared_secret: Optional[str] = None
    #: How long a user-interactive auth session stays usable.
    ui_auth_session_lifetime_ms: int = 15 * 60 * 1000
    #: How long a shared-secret registration nonce stays usable.
    shared_secret_nonce_lifetime_ms: int = 60 * 1000


def parse_registration(r: Reader) -> RegistrationConfig:
    """Parse the ``registration`` section."""
    secret = r.string("registration_shared_secret", None)
    if secret is not None and len(secret) < 16:
        raise ConfigError(r.key_path("registration_shared_secret"), "must be at least 16 characters")
    return RegistrationConfig(
        enable_registration=r.boolean("enable_registration", False),
        registration_requires_token=r.boolean("registration_requires_token", False),
        allow_guest_access=r.boolean("allow_guest_access", False),
        registration_shared_secret=secret,
        ui_auth_session_lifetime_ms=r.integer("ui_auth_session_lifetime_ms", 15 * 60 * 1000, minimum=1000),
        shared_secret_nonce_lifetime_ms=r.integer("shared_secret_nonce_lifetime_ms", 60 * 1000, minimum=1000),
    )


@attrs.frozen
class PasswordPolicyConfig:
    """``password_policy``: what a new password must look like."""

    enabled: bool = True
    minimum_length: int = 8
    require_digit: bool = False
    require_symbol: bool = False
    require_lowercase: bool = False
    require_uppercase: bool = False
    #: bcrypt cost factor (log2 rounds). Tests lower it to stay fast.
    bcrypt_rounds: int = 12


def parse_password_policy(r: Reader) -> PasswordPolicyConfig:
    """Parse the ``password_policy`` section."""
    return PasswordPolicyConfig(
        enabled=r.boolean("enabled", True),
        minimum_length=r.integer("minimum_length", 8, minimum=0, maximum=512),
        require_digit=r.boolean("require_digit", False),
        require_symbol=r.boolean("require_symbol", False),
        require_lowercase=r.boolean("require_lowercase", False),
        require_uppercase=r.boolean("require_uppercase", False),
        bcrypt_rounds=r.integer("bcrypt_rounds", 12, minimum=4, maximum=31),
    )


@attrs.frozen
class SessionsConfig:
    """``sessions``: lifetimes of access, refresh and login tokens."""

    #: Lifetime of an access token issued with a refresh token.
    refreshable_access_token_lifetime_ms: int = 5 * 60 * 1000
    #: Lifetime of an access token issued without one; None = never expires.
    nonrefreshable_access_token_lifetime_ms: Optional[int] = None
    #: Lifetime of a refresh token; None = until used or logged out.
    refresh_token_lifetime_ms: Optional[int] = None
    #: Lifetime of an ``m.login.token`` from ``/login/get_token``.
    login_token_lifetime_ms: int = 2 * 60 * 1000
    #: Whether ``/login/get_token`` is offered at all.
    enable_login_token_request: bool = True
    #: How long a validated access token is cached in memory. Logouts,
    #: deactivations, password and admin changes evict the user's tokens on
    #: every process through the ``caches`` stream, so the cache only saves
    #: the database read each request would cost. 0 disables it.
    token_cache_ms: int = 10_000


def parse_sessions(r: Reader) -> SessionsConfig:
    """Parse the ``sessions`` section."""
    return SessionsConfig(
        refreshable_access_token_lifetime_ms=r.integer("refreshable_access_token_lifetime_ms", 5 * 60 * 1000, minimum=1000),
        nonrefreshable_access_token_lifetime_ms=r.integer("nonrefreshable_access_token_lifetime_ms", None, minimum=1000),
        refresh_token_lifetime_ms=r.integer("refresh_token_lifetime_ms", None, minimum=1000),
        login_token_lifetime_ms=r.integer("login_token_lifetime_ms", 2 * 60 * 1000, minimum=1000),
        enable_login_token_request=r.boolean("enable_login_token_request", True),
        token_cache_ms=r.integer("token_cache_ms", 10_000, minimum=0, maximum=60000),
    )


@attrs.frozen
class RateLimit:
    """A token bucket: ``per_second`` refill rate, ``burst`` capacity."""

    per_second: float
    burst: int


@attrs.frozen
class RateLimitsConfig:
    """``rate_limits``: token buckets per action, keyed by user or address."""

    enabled: bool = True
    login_per_address: RateLimit = RateLimit(0.17, 3)
    login_per_account: RateLimit = RateLimit(0.17, 3)
    login_failed_attempts: RateLimit = RateLimit(0.17, 3)
    registration_per_address: RateLimit = RateLimit(0.17, 3)
    #: ``/register/available`` and registration-token validity checks.
    availability_per_address: RateLimit = RateLimit(1.0, 10)
    message_per_user: RateLimit = RateLimit(0.2, 10)
    join_per_user: RateLimit = RateLimit(0.1, 10)
    #: Addresses (exact strings) never limited, e.g. the router's own health checks.
    exempt_addresses: tuple[str, ...] = ()


_RATE_DEFAULTS = RateLimitsConfig()


def _parse_rate(r: Reader, key: str, default: RateLimit) -> RateLimit:
    if not r.has(key):
        r.raw(key, None)
        return default
    sub = r.section(key)
    limit = RateLimit(
        per_second=sub.number("per_second", default.per_second, minimum=0.0001),
        burst=sub.integer("burst", default.burst, minimum=1),
    )
    sub.finish()
    return limit


def parse_rate_limits(r: Reader) -> RateLimitsConfig:
    """Parse the ``rate_limits`` section."""
    return RateLimitsConfig(
        enabled=r.boolean("enabled", True),
        login_per_address=_parse_rate(r, "login_per_address", _RATE_DEFAULTS.login_per_address),
        login_per_account=_parse_rate(r, "login_per_account", _RATE_DEFAULTS.login_per_account),
        login_failed_attempts=_parse_rate(r, "login_failed_attempts", _RATE_DEFAULTS.login_failed_attempts),
        registration_per_address=_parse_rate(r, "registration_per_address", _RATE_DEFAULTS.registration_per_address),
        availability_per_address=_parse_rate(r, "availability_per_address", _RATE_DEFAULTS.availability_per_address),
        message_per_user=_parse_rate(r, "message_per_user", _RATE_DEFAULTS.message_per_user),
        join_per_user=_parse_rate(r, "join_per_user", _RATE_DEFAULTS.join_per_user),
        exempt_addresses=r.string_list("exempt_addresses", ()),
    )


@attrs.frozen
class WellKnownConfig:
    """``well_known``: what ``/.well-known/matrix/*`` says; unset = 404."""

    #: ``m.homeserver.base_url`` of ``/.well-known/matrix/client``.
    client_base_url: Optional[str] = None
    #: Extra keys merged into the client document (e.g. ``m.identity_server``).
    client_extra: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``m.server`` of ``/.well-known/matrix/server`` (``host:port``).
    server_delegation: Optional[str] = None
    support_contacts: tuple[Mapping[str, Any], ...] = ()


def parse_well_known(r: Reader) -> WellKnownConfig:
    """Parse the ``well_known`` section."""
    extra = r.raw("client_extra", {})
    if not isinstance(extra, dict):
        raise ConfigError(r.key_path("client_extra"), "expected a mapping")
    contacts = r.raw("support_contacts", [])
    if not isinstance(contacts, list) or not all(isinstance(c, dict) for c in contacts):
        raise ConfigError(r.key_path("support_contacts"), "expected a list of mappings")
    return WellKnownConfig(
        client_base_url=r.string("client_base_url", None, pattern=r"https?://.+", what="an http(s) URL"),
        client_extra=extra,
        server_delegation=r.string("server_delegation", None, pattern=r"[A-Za-z0-9.\-\[\]:]+", what="host[:port]"),
        support_contacts=tuple(contacts),
    )


@attrs.frozen
class ProfilesConfig:
    """``profiles``: limits on profile fields."""

    max_displayname_length: int = 256
    max_avatar_url_length: int = 1000
    #: Whether custom (namespaced) profile fields may be set.
    allow_custom_fields: bool = True
    #: Whether users may change their display name / avatar.
    allow_set_displayname: bool = True
    allow_set_avatar_url: bool = True
    #: Whether ``GET /profile`` needs an access token.
    require_auth_for_profile_requests: bool = False


def parse_profiles(r: Reader) -> ProfilesConfig:
    """Parse the ``profiles`` section."""
    return ProfilesConfig(
        max_displayname_length=r.integer("max_displayname_length", 256, minimum=1, maximum=65536),
        max_avatar_url_length=r.integer("max_avatar_url_length", 1000, minimum=1, maximum=65536),
        allow_custom_fields=r.boolean("allow_custom_fields", True),
        allow_set_displayname=r.boolean("allow_set_displayname", True),
        allow_set_avatar_url=r.boolean("allow_set_avatar_url", True),
        require_auth_for_profile_requests=r.boolean("require_auth_for_profile_requests", False),
    )


#: The sections this module contributes to :data:`homeserver.config.SECTIONS`.
ACCOUNT_SECTIONS: dict[str, Callable[[Reader], Any]] = {
    "registration": parse_registration,
    "password_policy": parse_password_policy,
    "sessions": parse_sessions,
    "rate_limits": parse_rate_limits,
    "well_known": parse_well_known,
    "profiles": parse_profiles,
}


@attrs.frozen
class AccountsConfig:
    """Everything the accounts API reads, gathered for wiring and tests."""

    server_name: str
    public_baseurl: str = "http://localhost:8008/"
    registration: RegistrationConfig = RegistrationConfig()
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()
    sessions: SessionsConfig = SessionsConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    well_known: WellKnownConfig = WellKnownConfig()
    profiles: ProfilesConfig = ProfilesConfig()

    @classmethod
    def from_homeserver_config(cls, config: Any) -> "AccountsConfig":
        """Pick the accounts sections out of a loaded ``HomeserverConfig``."""
        s = config.sections
        return cls(
            server_name=config.server_name,
            public_baseurl=config.public_baseurl,
            registration=s.get("registration", RegistrationConfig()),
            password_policy=s.get("password_policy", PasswordPolicyConfig()),
            sessions=s.get("sessions", SessionsConfig()),
            rate_limits=s.get("rate_limits", RateLimitsConfig()),
            well_known=s.get("well_known", WellKnownConfig()),
            profiles=s.get("profiles", ProfilesConfig()),
        )
