"""Server notices: messages from the server to one user, in a room of their own.

Client-server API, "Server Notices": notices come from a system user in a
room the user is invited to; the room carries the ``m.server_notice`` tag in
the user's account data and the user cannot leave it
(``M_CANNOT_LEAVE_SERVER_NOTICE_ROOM``). Admins send them through the
Synapse-compatible ``/_synapse/admin/v1/send_server_notice``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from homeserver.config.server_notices import ServerNoticesConfig
from homeserver.core.ids import UserID
from homeserver.errors import Codes, MatrixError, bad_json
from homeserver.handlers.auth import Requester

NOTICE_TAG = "m.server_notice"


def _internal(user_id: str) -> Requester:
    return Requester(user_id=user_id, device_id=None, is_guest=False, access_token_id=0, is_admin=False)


class ServerNoticesHandler:
    def __init__(self, clock: Any, server_name: str, config: ServerNoticesConfig, store: Any, commands: Any,
                 account_data: Any) -> None:
        self._clock = clock
        self._server_name = server_name
        self._config = config
        self._store = store
        self._commands = commands
        self._account_data = account_data

    @property
    def system_user_id(self) -> Optional[str]:
        if not self._config.enabled:
            return None
        return f"@{self._config.system_mxid_localpart}:{self._server_name}"

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def send_notice(self, user_id: Any, content: Any, event_type: Any = "m.room.message", txn_id: Optional[str] = None) -> str:
        """Send ``content`` to local user ``user_id``; returns the event ID."""
        system = self.system_user_id
        if system is None:
            raise MatrixError(400, Codes.UNKNOWN, "Server notices are not enabled on this server")
        if not isinstance(user_id, str):
            raise bad_json("'user_id' must be a string")
        try:
            target = UserID.parse(user_id)
        except ValueError:
            raise MatrixError(400, Codes.INVALID_PARAM, "'user_id' is not a user ID")
        if target.domain != self._server_name:
            raise MatrixError(400, Codes.INVALID_PARAM, "Server notices can only be sent to local users")
        if not isinstance(content, dict) or not content:
            raise bad_json("'content' must be a non-empty JSON object")
        if not isinstance(event_type, str) or not event_type:
            raise bad_json("'type' must be a string")
        room_id = await self._room_for(user_id, system)
        sent = await self._commands.send_event(_internal(system), room_id, event_type, content, txn_id)
        return sent["event_id"]

    async def _room_for(self, user_id: str, system: str) -> str:
        room_id = await self._store.get_room(user_id)
        if room_id is not None:
            return room_id
        await self._store.ensure_system_user(system, self._now())
        created = await self._commands.create_room(_internal(system), {
            "preset": "private_chat",
            "name": self._config.room_name,
            "invite": [user_id],
            # Only the system user speaks; the user may read and leave receipts.
            "power_level_content_override": {"events_default": 100, "users_default": 0},
        })
        room_id = await self._store.set_room(user_id, created["room_id"], self._now())
        await self._account_data.set_tag(_internal(user_id), user_id, room_id, NOTICE_TAG, {})
        return room_id

    async def check_leave(self, user_id: str, room_id: str) -> None:
        """Refuse leaving (or rejecting the invite to) one's notices room."""
        if self._config.enabled and await self._store.is_notice_room(user_id, room_id):
            raise MatrixError(403, Codes.CANNOT_LEAVE_SERVER_NOTICE_ROOM, "You cannot leave the server notices room")

    def is_system_user(self, user_id: str) -> bool:
        return user_id == self.system_user_id

    @staticmethod
    def parse_body(body: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        """``(user_id, content, type)`` of a send_server_notice body."""
        if "user_id" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: user_id")
        if "content" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: content")
        return body["user_id"], body["content"], body.get("type", "m.room.message")
