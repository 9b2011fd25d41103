"""The client-server API servlets.

:func:`register_account_api` mounts the whole accounts surface (issue 5) on a
:class:`homeserver.http.server.JsonResource`, given the handlers built by
``workers.accounts.build_account_api``.
"""

from __future__ import annotations

from typing import Any

from homeserver.http.server import JsonResource


def register_account_api(resource: JsonResource, api: Any, admin: bool = True) -> None:
    """Mount discovery, registration, login, account, devices, profile,
    account data and filter endpoints (and, with ``admin``, the Synapse-style
    admin registration and user administration endpoints). ``api`` is a ``workers.accounts.AccountApi``.
    """
    from homeserver.rest.admin import register as admin_register
    from homeserver.rest.admin import users as admin_users
    from homeserver.rest.client import account, account_data, devices, discovery, login, profile, register
    from homeserver.rest.client import admin as client_admin

    discovery.register(resource, api.config, api.config.sessions, api.authenticator)
    register.register(resource, api.registration)
    login.register(resource, api.sessions, api.authenticator)
    account.register(resource, api.account, api.authenticator)
    devices.register(resource, api.devices, api.authenticator)
    profile.register(resource, api.profiles, api.authenticator, api.config.profiles.require_auth_for_profile_requests)
    account_data.register(resource, api.account_data, api.filters, api.authenticator)
    client_admin.register(resource, api.admin_users, api.authenticator)
    if getattr(api, "openid", None) is not None:
        from homeserver.rest.client import openid

        openid.register(resource, api.openid, api.authenticator)
    if admin:
        admin_register.register(resource, api.registration, api.token_admin, api.authenticator)
        admin_users.register(resource, api.admin_users, api.authenticator)
