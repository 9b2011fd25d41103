"""Builds the accounts object graph (issue 5): stores, handlers, and the
rate-limit policy, from a database, a clock and the config.

``workers`` is the one place that knows both storage and handlers; every
role serving client requests calls :func:`build_account_api` once and
passes the result to ``homeserver.rest.client.register_account_api``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs

from homeserver.config.accounts import AccountsConfig
from homeserver.handlers.account import AccountHandler
from homeserver.handlers.admin import AdminUsers
from homeserver.handlers.account_data import AccountDataHandler, FilterHandler
from homeserver.handlers.auth import Authenticator
from homeserver.handlers.devices import DeviceHandler
from homeserver.handlers.discovery import client_well_known
from homeserver.handlers.openid import OpenIdHandler
from homeserver.handlers.passwords import PasswordHasher, PasswordVerifier
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.ratelimit import RateLimiter
from homeserver.handlers.register import RegistrationHandler
from homeserver.handlers.registration_tokens import RegistrationTokenAdmin
from homeserver.handlers.sessions import SessionHandler
from homeserver.handlers.uia import UserInteractiveAuth
from homeserver.rest.client._common import request_credentials
from storage.stores.account_data import AccountDataStore
from storage.stores.accounts import AccountStore
from storage.stores.admin import AdminStore
from storage.stores.openid import OpenIdTokenStore
from storage.stores.profiles import ProfileStore
from storage.stores.registration import RegistrationStore


@attrs.define
class AccountApi:
    """Every store and handler of the accounts area, wired together."""

    config: AccountsConfig
    account_store: AccountStore
    registration_store: RegistrationStore
    profile_store: ProfileStore
    account_data_store: AccountDataStore
    authenticator: Authenticator
    ratelimiter: RateLimiter
    hasher: PasswordHasher
    uia: UserInteractiveAuth
    sessions: SessionHandler
    registration: RegistrationHandler
    account: AccountHandler
    devices: DeviceHandler
    profiles: ProfileHandler
    account_data: AccountDataHandler
    filters: FilterHandler
    token_admin: RegistrationTokenAdmin
    #: The Synapse-compatible admin API's user administration.
    admin_users: AdminUsers
    admin_store: AdminStore
    #: OpenID tokens for third parties (client request_token; federation openid/userinfo).
    openid: Any = None


def build_account_api(
    reactor: Any,
    config: AccountsConfig,
    database: Any,
    ratelimit_backend: Any,
    hasher: Optional[PasswordHasher] = None,
    account_data_allocator_for: Optional[Callable[[str], Any]] = None,
) -> AccountApi:
    """Compose the accounts area.

    ``reactor`` gives time (and the thread pool bcrypt runs on);
    ``database`` is a ``storage.database.Database``; ``ratelimit_backend`` a
    ``bus.ratelimit.RedisRateLimiter`` (or ``MemoryRateLimiter`` for one
    process). Build ``config`` with ``AccountsConfig.from_homeserver_config``.
    ``account_data_allocator_for(user_id)`` returns the
    ``ShardPositionAllocator`` of the user's ``account_data`` shard on the
    writer that owns it (see ``storage/stores/account_data.py``); None uses
    one global sequence.
    """
    accounts = AccountStore(database)
    registration_store = RegistrationStore(database, accounts)
    profile_store = ProfileStore(database)
    account_data_store = AccountDataStore(database, allocator_for=account_data_allocator_for)
    authenticator = Authenticator(
        reactor, accounts, cache_ms=config.sessions.token_cache_ms, credentials_of=request_credentials
    )
    ratelimiter = RateLimiter(ratelimit_backend, config.rate_limits)
    hasher = hasher or PasswordHasher(reactor, rounds=config.password_policy.bcrypt_rounds)

    uia = UserInteractiveAuth(reactor, registration_store, PasswordVerifier(accounts, hasher), config.registration.ui_auth_session_lifetime_ms)
    sessions = SessionHandler(
        reactor, config.server_name, accounts, authenticator, hasher, uia, ratelimiter, config.sessions,
        well_known=client_well_known(config.well_known),
    )
    registration = RegistrationHandler(
        reactor, config, accounts, registration_store, uia, sessions, hasher, ratelimiter
    )
    account = AccountHandler(config.server_name, accounts, authenticator, uia, hasher, config.password_policy)
    devices = DeviceHandler(config.server_name, accounts, authenticator, uia)
    profiles = ProfileHandler(config.server_name, accounts, profile_store, config.profiles)
    admin_store = AdminStore(database, config.server_name)
    return AccountApi(
        config=config,
        account_store=accounts,
        registration_store=registration_store,
        profile_store=profile_store,
        account_data_store=account_data_store,
        authenticator=authenticator,
        ratelimiter=ratelimiter,
        hasher=hasher,
        uia=uia,
        sessions=sessions,
        registration=registration,
        account=account,
        devices=devices,
        profiles=profiles,
        account_data=AccountDataHandler(account_data_store),
        filters=FilterHandler(account_data_store),
        token_admin=RegistrationTokenAdmin(reactor, registration_store),
        admin_users=AdminUsers(config.server_name, admin_store, accounts, authenticator, account, devices, profiles,
                               registration),
        admin_store=admin_store,
        openid=OpenIdHandler(reactor, config.server_name, OpenIdTokenStore(database)),
    )
