"""Server-side key backups (client-server API, "Server-side key backups").

Versions and keys are the user's own rows, written in one transaction each
(no stream: nothing of a backup appears in /sync), so any client writer may
serve them. Keys are only written to the user's current version (403
``M_WRONG_ROOM_KEYS_VERSION`` otherwise, with ``current_version``); a stored
key is replaced only by a better one (:func:`homeserver.core.key_backup.prefer`).
"""

from __future__ import annotations

from typing import Any, Optional

from homeserver.core.key_backup import BackupKey, prefer
from homeserver.errors import Codes, MatrixError, bad_json, invalid_param

#: The spec caps nothing; a bound keeps one request's transaction bounded.
MAX_SESSIONS_PER_REQUEST = 10000


def unknown_version() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "Unknown backup version")


def parse_version(text: Optional[str]) -> int:
    """A version from the path or query (404 when it cannot name a version: none can exist)."""
    if text is None or text == "":
        raise MatrixError(400, Codes.MISSING_PARAM, "'version' is required")
    if not text.isdigit() or len(text) > 18:
        raise unknown_version()
    return int(text)


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_json(f"'{field}' must be a non-negative integer")
    return value


def parse_key(room_id: str, session_id: str, value: Any) -> BackupKey:
    """One ``KeyBackupData`` object (``M_BAD_JSON`` if malformed)."""
    if not isinstance(value, dict):
        raise bad_json(f"Key data of session {session_id} must be an object")
    if not isinstance(value.get("is_verified"), bool):
        raise bad_json("'is_verified' must be a boolean")
    if not isinstance(value.get("session_data"), dict):
        raise bad_json("'session_data' must be an object")
    return BackupKey(room_id, session_id, _int(value.get("first_message_index"), "first_message_index"),
                     _int(value.get("forwarded_count"), "forwarded_count"), value["is_verified"], value["session_data"])


def parse_sessions(room_id: str, value: Any) -> list[BackupKey]:
    """A ``RoomKeyBackup`` object: ``{"sessions": {session_id: KeyBackupData}}``."""
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), dict):
        raise bad_json(f"Keys of room {room_id} must be an object with a 'sessions' object")
    return [parse_key(room_id, session_id, data) for session_id, data in value["sessions"].items()]


def parse_rooms(body: Any) -> list[BackupKey]:
    """The body of ``PUT /room_keys/keys``: ``{"rooms": {room_id: RoomKeyBackup}}``."""
    if not isinstance(body, dict) or not isinstance(body.get("rooms"), dict):
        raise bad_json("'rooms' must be an object")
    keys = []
    for room_id, room in body["rooms"].items():
        if not room_id.startswith("!"):
            raise invalid_param(f"Invalid room ID {room_id!r}")
        keys.extend(parse_sessions(room_id, room))
    return keys


def parse_version_body(body: Any) -> tuple[str, dict[str, Any]]:
    """``algorithm`` and ``auth_data`` of a version body."""
    if not isinstance(body, dict):
        raise bad_json("Body must be a JSON object")
    algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
    if not isinstance(algorithm, str) or not algorithm:
        raise bad_json("'algorithm' must be a string")
    if not isinstance(auth_data, dict):
        raise bad_json("'auth_data' must be an object")
    return algorithm, auth_data


class KeyBackupHandler:
    """The /room_keys endpoints of the requesting user."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def create_version(self, requester: Any, body: Any) -> dict[str, Any]:
        """POST /room_keys/version."""
        algorithm, auth_data = parse_version_body(body)
        version = await self._store.create_version(requester.user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, requester: Any, version: Optional[str]) -> dict[str, Any]:
        """GET /room_keys/version[/{version}] (None: the current one)."""
        number = parse_version(version) if version is not None else None
        found = await self._store.get_version(requester.user_id, number)
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No current backup version" if number is None else "Unknown backup version")
        return {"algorithm": found.algorithm, "auth_data": found.auth_data, "count": found.count,
                "etag": str(found.etag), "version": str(found.version)}

    async def update_version(self, requester: Any, version: str, body: Any) -> dict[str, Any]:
        """PUT /room_keys/version/{version}: only ``auth_data`` may change."""
        number = parse_version(version)
        algorithm, auth_data = parse_version_body(body)
        if "version" in body and body["version"] != version:
            raise invalid_param("'version' in the body does not match the path")
        found = await self._store.get_version(requester.user_id, number)
        if found is None:
            raise unknown_version()
        if algorithm != found.algorithm:
            raise invalid_param("The algorithm of a backup version cannot change")
        if not await self._store.update_version(requester.user_id, number, auth_data):
            raise unknown_version()
        return {}

    async def delete_version(self, requester: Any, version: str) -> dict[str, Any]:
        """DELETE /room_keys/version/{version}: the version and its keys."""
        if not await self._store.delete_version(requester.user_id, parse_version(version)):
            raise unknown_version()
        return {}

    async def put_keys(self, requester: Any, version: Optional[str], body: Any, room_id: Optional[str] = None,
                       session_id: Optional[str] = None) -> dict[str, Any]:
        """PUT /room_keys/keys[/{roomId}[/{sessionId}]]?version=."""
        number = parse_version(version)
        if room_id is None:
            keys = parse_rooms(body)
        elif session_id is None:
            keys = parse_sessions(room_id, body)
        else:
            keys = [parse_key(room_id, session_id, body)]
        if len(keys) > MAX_SESSIONS_PER_REQUEST:
            raise invalid_param(f"At most {MAX_SESSIONS_PER_REQUEST} sessions per request")
        result = await self._store.put_keys(requester.user_id, number, keys, prefer)
        if result is None:
            raise unknown_version()
        if not isinstance(result, tuple):
            current = result.current
            raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version",
                              **({"current_version": str(current)} if current is not None else {}))
        etag, count = result
        return {"etag": str(etag), "count": count}

    async def get_keys(self, requester: Any, version: Optional[str], room_id: Optional[str] = None,
                       session_id: Optional[str] = None) -> dict[str, Any]:
        """GET /room_keys/keys[/{roomId}[/{sessionId}]]?version=."""
        keys = await self._store.get_keys(requester.user_id, parse_version(version), room_id, session_id)
        if keys is None:
            raise unknown_version()
        if session_id is not None:
            if not keys:
                raise MatrixError(404, Codes.NOT_FOUND, "No backed-up key for this session")
            return keys[0].to_json()
        rooms: dict[str, dict[str, Any]] = {}
        for key in keys:
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = key.to_json()
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})
        return {"rooms": rooms}

    async def delete_keys(self, requester: Any, version: Optional[str], room_id: Optional[str] = None,
                          session_id: Optional[str] = None) -> dict[str, Any]:
        """DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=."""
        result = await self._store.delete_keys(requester.user_id, parse_version(version), room_id, session_id)
        if result is None:
            raise unknown_version()
        etag, count = result
        return {"etag": str(etag), "count": count}
