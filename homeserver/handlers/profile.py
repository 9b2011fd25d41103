"""Profiles: ``displayname``, ``avatar_url``, ``m.tz`` and custom fields.

Limits: each key at most 255 bytes (``M_KEY_TOO_LARGE``), the whole profile
under 64 KiB (``M_PROFILE_TOO_LARGE``), display names and avatar URLs no
longer than configured.

``observers`` (:data:`ProfileObserver`) are called after a field changed;
the rooms issue registers one that sends updated ``m.room.member`` events
into every room the user has joined.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from homeserver.core.accounts import ProfileTooLarge
from homeserver.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param, not_found
from homeserver.handlers.auth import Requester
from homeserver.handlers.ids import server_of

#: ``(user_id, key, value)``; ``value`` is None after a deletion.
ProfileObserver = Callable[[str, str, Any], None]

MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
PROFILE_TOO_LARGE = "M_PROFILE_TOO_LARGE"
KEY_TOO_LARGE = "M_KEY_TOO_LARGE"
_KEY = re.compile(r"(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)\Z")


def check_profile_key(key: str) -> None:
    """400 unless ``key`` is a field name the spec allows."""
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise MatrixError(400, KEY_TOO_LARGE, f"Profile keys are limited to {MAX_KEY_BYTES} bytes")
    if not _KEY.match(key):
        raise invalid_param("Invalid profile key")


class ProfileHandler:
    """Profile reads and writes of local users; ``config`` is the ``profiles`` section."""

    def __init__(self, server_name: str, accounts: Any, profiles: Any, config: Any) -> None:
        self._server_name = server_name
        self._accounts = accounts
        self._profiles = profiles
        self._config = config
        self.observers: list[ProfileObserver] = []
        #: Asks a user's server for its profile (``homeserver.federation.queries.RemoteQueries``);
        #: without it, users of other servers have no profile here.
        self.remote: Any = None

    async def _require_local_user(self, user_id: str) -> None:
        if server_of(user_id) != self._server_name or await self._accounts.get_user(user_id) is None:
            raise not_found("Profile not found")

    def _is_remote(self, user_id: str) -> bool:
        return self.remote is not None and server_of(user_id) not in ("", self._server_name)

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """``GET /profile/{userId}`` (a remote user's is asked of their server)."""
        if self._is_remote(user_id):
            return await self.remote.profile(user_id)
        await self._require_local_user(user_id)
        return await self._profiles.get_profile(user_id)

    async def get_field(self, user_id: str, key: str) -> dict[str, Any]:
        """``GET /profile/{userId}/{keyName}``."""
        check_profile_key(key)
        if self._is_remote(user_id):
            return await self.remote.profile(user_id, key)
        await self._require_local_user(user_id)
        found = await self._profiles.get_field(user_id, key)
        if found is None:
            raise not_found("Profile field not set")
        return {key: found[0]}

    def _check_writable(self, requester: Requester, user_id: str, key: str) -> None:
        if requester.user_id != user_id:
            raise forbidden("Cannot change another user's profile")
        if requester.is_guest and key != "displayname":
            raise forbidden("Guests may only change their display name")
        if key == "displayname" and not self._config.allow_set_displayname:
            raise forbidden("Changing display name is disabled on this server")
        if key == "avatar_url" and not self._config.allow_set_avatar_url:
            raise forbidden("Changing avatar is disabled on this server")
        if key not in ("displayname", "avatar_url", "m.tz") and not self._config.allow_custom_fields:
            raise forbidden("Custom profile fields are disabled on this server")

    def _check_value(self, key: str, value: Any) -> None:
        if key == "displayname":
            if not isinstance(value, str):
                raise bad_json("'displayname' must be a string")
            if len(value) > self._config.max_displayname_length:
                raise bad_json(f"Display name is too long (max {self._config.max_displayname_length})")
        elif key == "avatar_url":
            if not isinstance(value, str):
                raise bad_json("'avatar_url' must be a string")
            if value and not value.startswith("mxc://"):
                raise bad_json("'avatar_url' must be an mxc:// URI")
            if len(value) > self._config.max_avatar_url_length:
                raise bad_json(f"Avatar URL is too long (max {self._config.max_avatar_url_length})")
        elif key == "m.tz":
            if not isinstance(value, str):
                raise bad_json("'m.tz' must be a string")

    async def set_field(self, requester: Requester, user_id: str, key: str, body: dict[str, Any]) -> None:
        """``PUT /profile/{userId}/{keyName}``."""
        check_profile_key(key)
        self._check_writable(requester, user_id, key)
        if key not in body:
            raise missing_param(key)
        value = body[key]
        self._check_value(key, value)
        try:
            await self._profiles.set_field(user_id, key, value, MAX_PROFILE_BYTES)
        except ProfileTooLarge:
            raise MatrixError(400, PROFILE_TOO_LARGE, "Profile would exceed 64 KiB")
        self._notify(user_id, key, value)

    async def delete_field(self, requester: Requester, user_id: str, key: str) -> None:
        """``DELETE /profile/{userId}/{keyName}`` (succeeds if the field was not set)."""
        check_profile_key(key)
        self._check_writable(requester, user_id, key)
        if await self._profiles.delete_field(user_id, key):
            self._notify(user_id, key, None)

    async def set_field_as_admin(self, user_id: str, key: str, value: str) -> None:
        """An admin sets a local user's display name or avatar (Synapse's PUT /v2/users).

        The value is checked as for the user themself, but not the
        ``allow_set_*`` switches (they restrict users, not operators). An
        empty string removes the field, as Synapse does. The observers run as
        for a user's own change (so member events follow in joined rooms).
        """
        self.check_value_as_admin(key, value)
        if value == "":
            if await self._profiles.delete_field(user_id, key):
                self._notify(user_id, key, None)
            return
        try:
            await self._profiles.set_field(user_id, key, value, MAX_PROFILE_BYTES)
        except ProfileTooLarge:
            raise MatrixError(400, PROFILE_TOO_LARGE, "Profile would exceed 64 KiB")
        self._notify(user_id, key, value)

    def check_value_as_admin(self, key: str, value: Any) -> None:
        """Refuse what :meth:`set_field_as_admin` would refuse, before anything is written."""
        check_profile_key(key)
        if value != "":
            self._check_value(key, value)

    def _notify(self, user_id: str, key: str, value: Optional[Any]) -> None:
        for observer in list(self.observers):
            observer(user_id, key, value)
