"""The Synapse-compatible admin API: users, their devices, and rooms.

Shapes follow Synapse's ``docs/admin_api`` (``user_admin_api.md``,
``rooms.md``) so existing tools (synadm, Synapse-Admin, scripts) work.
Every write reuses the path the user's own request would take:

- passwords and deactivation go through :class:`AccountHandler`, devices
  through :class:`DeviceHandler`: tokens are deleted in the same
  transaction and the token caches are invalidated here and, over the
  ``caches`` stream, on every other process;
- display name and avatar go through :class:`ProfileHandler` (whose
  observers re-send member events through the command dispatcher, on the
  owner of each room's shard);
- account creation through :class:`RegistrationHandler`.

The admin role may run on an instance owning no shard: nothing here writes a
shard-owned stream directly.

Estuary has no shadow-banning, account locking, suspension, third-party
identifiers or SSO: those fields are reported as their (true) empty values,
and requests to set them to anything else are refused with
``M_INVALID_PARAM`` rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs

from homeserver.errors import Codes, MatrixError, bad_json, invalid_param, missing_param, not_found
from homeserver.handlers.devices import MAX_DEVICES_PER_REQUEST
from homeserver.handlers.ids import localpart_of, server_of

#: Largest page of the list endpoints.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Synapse's allowed ``user_type`` values (no extra types are configurable here).
USER_TYPES = ("bot", "support")
#: ``order_by`` values of the user list (Synapse's; the store maps them to columns).
USER_ORDERS = frozenset({
    "name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned", "locked", "displayname",
    "avatar_url", "creation_ts", "last_seen_ts",
})
#: ``order_by`` values of the room list (Synapse's, with its deprecated ``alphabetical`` and ``size``).
ROOM_ORDERS = frozenset({
    "name", "canonical_alias", "joined_members", "joined_local_members", "version", "creator", "encryption",
    "federatable", "public", "join_rules", "guest_access", "history_visibility", "state_events",
    "alphabetical", "size",
})


@attrs.frozen
class UserQuery:
    """Filters, order and page of the user list (already validated)."""

    start: int = 0
    limit: int = 100
    guests: bool = True
    #: None: everyone; True: deactivated users only; False: active users only.
    #: (v2's ``deactivated=true`` means None, its default False; v3 passes the flag through.)
    deactivated: Optional[bool] = False
    admins: Optional[bool] = None
    name: Optional[str] = None
    user_id: Optional[str] = None
    order_by: str = "name"
    backwards: bool = False
    #: User types to leave out ("" stands for users without a type).
    not_user_types: tuple[str, ...] = ()


@attrs.frozen
class RoomQuery:
    """Filter, order and page of the room list (already validated)."""

    start: int = 0
    limit: int = 100
    order_by: str = "name"
    backwards: bool = False
    search_term: Optional[str] = None
    #: True: only rooms nobody is joined to; False: only rooms someone is joined to.
    empty_rooms: Optional[bool] = None




def parse_bool(value: Optional[str], name: str, default: Optional[bool]) -> Optional[bool]:
    """A ``true``/``false`` query value (``M_INVALID_PARAM`` otherwise)."""
    if value is None:
        return default
    if value == "true":
        return True
    if value == "false":
        return False
    raise invalid_param(f"Query parameter {name!r} must be 'true' or 'false'")


def parse_int(value: Optional[str], name: str, default: int, maximum: Optional[int] = None) -> int:
    """A non-negative integer query value (``M_INVALID_PARAM`` otherwise)."""
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise invalid_param(f"Query parameter {name!r} must be a non-negative integer")
    number = int(value)
    if maximum is not None:
        number = min(number, maximum)
    return number


def parse_dir(value: Optional[str]) -> bool:
    """``dir``: ``f`` (default) or ``b``; True for backwards."""
    if value is None or value == "f":
        return False
    if value == "b":
        return True
    raise invalid_param("Query parameter 'dir' must be 'f' or 'b'")


def _list_user_json(row: Any) -> dict[str, Any]:
    return {
        "name": row.user_id,
        "is_guest": row.is_guest,
        "admin": row.is_admin,
        "user_type": row.user_type,
        "deactivated": row.deactivated,
        "erased": row.erased,
        "shadow_banned": False,
        "displayname": row.displayname,
        "avatar_url": row.avatar_url,
        "creation_ts": row.created_ts,
        "last_seen_ts": row.last_seen_ts,
        "locked": False,
    }


def _user_details_json(row: Any) -> dict[str, Any]:
    out = _list_user_json(row)
    # Synapse's details report creation_ts in seconds (the list in milliseconds).
    out["creation_ts"] = row.created_ts // 1000
    out.update({
        "threepids": [],
        "external_ids": [],
        "appservice_id": None,
        "consent_server_notice_sent": None,
        "consent_version": None,
        "consent_ts": None,
        "suspended": False,
    })
    return out


def _device_json(user_id: str, device: Any) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": device.last_seen_user_agent,
        "user_id": user_id,
    }


def _room_json(row: Any) -> dict[str, Any]:
    return {
        "room_id": row.room_id,
        "name": row.name,
        "canonical_alias": row.canonical_alias,
        "joined_members": row.joined_members,
        "joined_local_members": row.joined_local_members,
        "version": row.version,
        "creator": row.creator,
        "encryption": row.encryption,
        "federatable": row.federatable,
        "public": row.public,
        "join_rules": row.join_rules,
        "guest_access": row.guest_access,
        "history_visibility": row.history_visibility,
        "state_events": row.state_events,
        "room_type": row.room_type,
    }


class AdminUsers:
    """User administration.

    ``store`` is a ``storage.stores.admin.AdminStore``; ``accounts`` the
    account store (``get_user``, ``set_admin``); the handlers are the
    accounts area's.
    """

    def __init__(
        self,
        server_name: str,
        store: Any,
        accounts: Any,
        authenticator: Any,
        account: Any,
        devices: Any,
        profiles: Any,
        registration: Any,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._accounts = accounts
        self._auth = authenticator
        self._account = account
        self._devices = devices
        self._profiles = profiles
        self._registration = registration

    def _require_local(self, user_id: str, what: str = "Can only look up local users") -> None:
        if not user_id.startswith("@") or server_of(user_id) != self._server_name:
            raise invalid_param(what)

    async def _require_user(self, user_id: str, what: str = "Can only look up local users") -> Any:
        self._require_local(user_id, what)
        row = await self._store.get_user(user_id)
        if row is None:
            raise not_found("User not found")
        return row

    # -- reads ------------------------------------------------------------

    async def list_users(self, query: Any) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/users``."""
        rows, total = await self._store.list_users(query)
        out: dict[str, Any] = {"users": [_list_user_json(r) for r in rows], "total": total}
        if query.start + len(rows) < total and rows:
            out["next_token"] = str(query.start + len(rows))
        return out

    async def get_user(self, user_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/users/{userId}``."""
        return _user_details_json(await self._require_user(user_id))

    async def whois(self, user_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/whois/{userId}``: each device's last connection.

        Estuary keeps the last address per device (not every address ever
        used), so each device has one session with at most one connection.
        """
        await self._require_user(user_id, "Can only whois a local user")
        devices: dict[str, Any] = {}
        for device in await self._store.get_devices(user_id):
            connections = []
            if device.last_seen_ts is not None:
                connection = {"ip": device.last_seen_ip, "last_seen": device.last_seen_ts,
                              "user_agent": device.last_seen_user_agent}
                connections.append({k: v for k, v in connection.items() if v is not None})
            devices[device.device_id] = {"sessions": [{"connections": connections}]}
        return {"user_id": user_id, "devices": devices}

    async def is_admin(self, user_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/users/{userId}/admin``."""
        row = await self._require_user(user_id, "Only local users can be admins of this homeserver")
        return {"admin": row.is_admin}

    async def list_devices(self, user_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/users/{userId}/devices``."""
        await self._require_user(user_id)
        devices = [_device_json(user_id, d) for d in await self._store.get_devices(user_id)]
        return {"devices": devices, "total": len(devices)}

    async def get_device(self, user_id: str, device_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}``."""
        await self._require_user(user_id)
        for device in await self._store.get_devices(user_id):
            if device.device_id == device_id:
                return _device_json(user_id, device)
        raise not_found("Device not found")

    async def joined_rooms(self, user_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/users/{userId}/joined_rooms`` (remote users too, as in Synapse)."""
        if not user_id.startswith("@") or not server_of(user_id):
            raise invalid_param("Not a valid user id")
        rooms = await self._store.joined_rooms(user_id)
        return {"joined_rooms": rooms, "total": len(rooms)}

    # -- writes -----------------------------------------------------------

    async def set_admin(self, requester: Any, user_id: str, body: Mapping[str, Any]) -> None:
        """``PUT /_synapse/admin/v1/users/{userId}/admin``."""
        admin = body.get("admin")
        if not isinstance(admin, bool):
            raise MatrixError(400, Codes.MISSING_PARAM if admin is None else Codes.BAD_JSON, "'admin' must be a boolean")
        await self._require_user(user_id, "Only local users can be admins of this homeserver")
        if user_id == requester.user_id and not admin:
            raise bad_json("You may not demote yourself.")
        await self._change_admin(user_id, admin)

    async def _change_admin(self, user_id: str, admin: bool) -> None:
        await self._accounts.set_admin(user_id, admin)
        # Cached token records carry is_admin.
        self._auth.invalidate_user(user_id)

    async def reset_password(self, user_id: str, body: Mapping[str, Any]) -> None:
        """``POST /_synapse/admin/v1/reset_password/{userId}``."""
        new_password = body.get("new_password")
        if new_password is None:
            raise missing_param("new_password")
        if not isinstance(new_password, str):
            raise bad_json("'new_password' must be a string")
        logout_devices = body.get("logout_devices", True)
        if not isinstance(logout_devices, bool):
            raise bad_json("'logout_devices' must be a boolean")
        await self._require_user(user_id, "Can only change the password of local users")
        await self._account.set_password(user_id, new_password, logout_devices)

    async def deactivate(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /_synapse/admin/v1/deactivate/{userId}``."""
        erase = body.get("erase", False)
        if not isinstance(erase, bool):
            raise bad_json("'erase' must be a boolean")
        await self._require_user(user_id, "Can only deactivate local users")
        await self._account.deactivate_user(user_id, erase)
        # No third-party identifier is ever bound here, so no unbinding failed.
        return {"id_server_unbind_result": "success"}

    async def update_device(self, user_id: str, device_id: str, body: dict[str, Any]) -> None:
        """``PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}``."""
        await self._require_user(user_id)
        await self._devices.rename_device(user_id, device_id, body)

    async def delete_device(self, user_id: str, device_id: str) -> None:
        """``DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}`` (an unknown device is fine)."""
        await self._require_user(user_id)
        await self._devices.remove_devices(user_id, [device_id])

    async def delete_devices(self, user_id: str, body: Mapping[str, Any]) -> None:
        """``POST /_synapse/admin/v2/users/{userId}/delete_devices``."""
        devices = body.get("devices")
        if devices is None:
            raise missing_param("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json("'devices' must be a list of strings")
        if len(devices) > MAX_DEVICES_PER_REQUEST:
            raise bad_json(f"At most {MAX_DEVICES_PER_REQUEST} devices per request")
        await self._require_user(user_id)
        await self._devices.remove_devices(user_id, devices)

    async def put_user(self, requester: Any, user_id: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``PUT /_synapse/admin/v2/users/{userId}``: create (201) or modify (200).

        Everything is validated before anything is written.
        """
        self._require_local(user_id, "This endpoint can only be used with local users")
        changes = _parse_user_changes(body)
        existing = await self._store.get_user(user_id)
        if existing is None:
            return 201, await self._create(user_id, changes)
        if existing.is_guest:
            raise invalid_param("Guest accounts cannot be modified here")
        if user_id == requester.user_id and changes.get("admin") is False:
            raise bad_json("You may not demote yourself.")
        if user_id == requester.user_id and changes.get("deactivated") is True:
            raise bad_json("You may not deactivate yourself.")
        reactivating = existing.deactivated and changes.get("deactivated") is False
        if reactivating and "password" not in changes:
            raise missing_param("password")
        for key in ("displayname", "avatar_url"):
            if key in changes:
                self._profiles.check_value_as_admin(key, changes[key])
        password_hash = None
        if "password" in changes:
            password_hash = await self._account.hash_new_password(changes["password"])

        if reactivating:
            await self._store.reactivate_user(user_id)
        if password_hash is not None:
            await self._account.store_password_hash(user_id, password_hash, changes.get("logout_devices", True))
        for key in ("displayname", "avatar_url"):
            if key in changes:
                await self._profiles.set_field_as_admin(user_id, key, changes[key])
        if "admin" in changes and changes["admin"] != existing.is_admin:
            await self._change_admin(user_id, changes["admin"])
        if "user_type" in changes and changes["user_type"] != existing.user_type:
            await self._store.set_user_type(user_id, changes["user_type"])
        if changes.get("deactivated") is True and not existing.deactivated:
            await self._account.deactivate_user(user_id, False)
        return 200, await self.get_user(user_id)

    async def _create(self, user_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        localpart = localpart_of(user_id)
        self._registration.check_localpart(localpart)
        for key in ("displayname", "avatar_url"):
            if key in changes:
                self._profiles.check_value_as_admin(key, changes[key])
        password_hash = None
        if "password" in changes:
            password_hash = await self._account.hash_new_password(changes["password"])
        displayname = changes.get("displayname") or None
        await self._registration.create_by_admin(
            localpart, password_hash, changes.get("admin", False), changes.get("user_type"),
            displayname,
        )
        if changes.get("avatar_url"):
            await self._profiles.set_field_as_admin(user_id, "avatar_url", changes["avatar_url"])
        if changes.get("deactivated") is True:
            await self._account.deactivate_user(user_id, False)
        return await self.get_user(user_id)


def _parse_user_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a PUT /v2/users body, checked (``M_BAD_JSON`` / ``M_INVALID_PARAM``)."""
    # As in Synapse, null means "leave unchanged" (tools send whole records
    # back with nulls), except for user_type where null clears it.
    changes: dict[str, Any] = {}
    for key in ("password", "displayname", "avatar_url"):
        if body.get(key) is not None:
            if not isinstance(body[key], str):
                raise bad_json(f"'{key}' must be a string")
            changes[key] = body[key]
    if "avatar_url" in changes and changes["avatar_url"] and not changes["avatar_url"].startswith("mxc://"):
        raise bad_json("'avatar_url' must be an mxc:// URI")
    for key in ("logout_devices", "admin", "deactivated"):
        if body.get(key) is not None:
            if not isinstance(body[key], bool):
                raise bad_json(f"'{key}' must be a boolean")
            changes[key] = body[key]
    if "user_type" in body:
        if body["user_type"] is not None and body["user_type"] not in USER_TYPES:
            raise bad_json("'user_type' must be null, 'bot' or 'support'")
        changes["user_type"] = body["user_type"]
    # What Estuary does not have may only be set to its empty value.
    for key in ("locked", "suspended", "shadow_banned"):
        if key in body and body[key] not in (False, None):
            raise invalid_param(f"'{key}' is not supported by this server")
    for key in ("threepids", "external_ids"):
        if key in body and body[key] not in ([], None):
            raise invalid_param(f"'{key}' is not supported by this server")
    return changes


class AdminRooms:
    """Room administration (reads).

    ``store`` is a ``storage.stores.admin.AdminStore``; ``events`` the
    events store (``get_current_state_ids``, ``get_events``) and
    ``loader`` the rooms area's ``EventLoader`` (client serialisation).
    """

    def __init__(self, store: Any, events: Any, loader: Any) -> None:
        self._store = store
        self._events = events
        self._loader = loader

    async def list_rooms(self, query: Any) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms``."""
        rows, total = await self._store.list_rooms(query)
        out: dict[str, Any] = {
            "rooms": [_room_json(r) for r in rows],
            "offset": query.start,
            "total_rooms": total,
        }
        if query.start + len(rows) < total and rows:
            out["next_batch"] = query.start + len(rows)
        if query.start > 0:
            out["prev_batch"] = max(0, query.start - query.limit)
        return out

    async def _require_room(self, room_id: str) -> Any:
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id!r} is not a room id")
        found = await self._store.get_room(room_id)
        if found is None:
            raise not_found("Room not found")
        return found

    async def get_room(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}``."""
        row, local_devices = await self._require_room(room_id)
        out = _room_json(row)
        out.update({"topic": row.topic, "avatar": row.avatar, "joined_local_devices": local_devices})
        return out

    async def members(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/members``: the joined members."""
        await self._require_room(room_id)
        members = await self._store.room_members(room_id)
        return {"members": members, "total": len(members)}

    async def state(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/state``: the current state, client format."""
        await self._require_room(room_id)
        state = await self._events.get_current_state_ids(room_id)
        rows = await self._events.get_events(room_id, list(state.values()))
        events = await self._loader.serialize_rows(room_id, sorted(rows.values(), key=lambda r: r.stream_position))
        return {"state": events}

    # -- event reports ----------------------------------------------------

    async def list_event_reports(self, start: int, limit: int, backwards: bool, user_id: Optional[str],
                                 room_id: Optional[str]) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/event_reports`` (newest first unless ``dir=f``)."""
        reports, total = await self._store.list_event_reports(start, limit, backwards, user_id, room_id)
        out: dict[str, Any] = {"event_reports": reports, "total": total}
        if start + len(reports) < total and reports:
            out["next_token"] = start + len(reports)
        return out

    async def get_event_report(self, report_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/event_reports/{reportId}``."""
        report = await self._store.get_event_report(_report_id(report_id))
        if report is None:
            raise not_found("Event report not found")
        return report

    async def delete_event_report(self, report_id: str) -> None:
        """``DELETE /_synapse/admin/v1/event_reports/{reportId}``."""
        if not await self._store.delete_event_report(_report_id(report_id)):
            raise not_found("Event report not found")


def _report_id(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise invalid_param("The report ID must be a non-negative integer")
    return int(value)
