"""A profile change updates the user's member event in every joined room.

Client-server API, "Events on Change of Profile Information": when a user
changes their display name or avatar URL, the server sends an updated
``m.room.member`` join event (same membership, new ``displayname`` /
``avatar_url``) into each room they are joined to. Each room's event is
created by the owner of the room's events shard, so the update travels as
a replication command through the :class:`CommandDispatcher`.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from homeserver.handlers.auth import Requester

logger = logging.getLogger(__name__)

COMMAND = "profile_member_update"
PROFILE_KEYS = ("displayname", "avatar_url")


class ProfileMemberUpdater:
    """Sends the member events a profile change calls for."""

    def __init__(self, rooms: Any, dispatcher: Any) -> None:
        self._rooms = rooms
        self._dispatcher = dispatcher
        dispatcher.register(COMMAND, "events", self._update_room)
        self.pending: list[defer.Deferred] = []

    def on_profile_change(self, user_id: str, key: str, value: Any) -> None:
        """The ``ProfileObserver`` hook: start the updates, log failures."""
        if key not in PROFILE_KEYS:
            return
        d = defer.ensureDeferred(self.update_rooms(user_id, key, value))
        self.pending.append(d)

        def done(result: Any) -> Any:
            self.pending.remove(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: logger.warning("profile update of %s's rooms failed: %s", user_id, f.getErrorMessage()))

    async def update_rooms(self, user_id: str, key: str, value: Any) -> int:
        """Update every joined room; returns how many rooms got a new event."""
        requester = _internal_requester(user_id)
        updated = 0
        for room_id in await self._rooms.joined_rooms(requester):
            try:
                result = await self._dispatcher.run(COMMAND, room_id, {"room_id": room_id, "user_id": user_id, "key": key, "value": value})
            except Exception as e:  # one room's refusal must not stop the others
                logger.warning("could not update %s's member event in %s: %s", user_id, room_id, e)
                continue
            updated += 1 if result.get("event_id") else 0
        return updated

    async def _update_room(self, args: dict[str, Any]) -> dict[str, Any]:
        """On the shard owner: re-send the join with the new profile field."""
        room_id, user_id, key, value = args["room_id"], args["user_id"], args["key"], args["value"]
        requester = _internal_requester(user_id)
        try:
            current = await self._rooms.get_state_event(requester, room_id, "m.room.member", user_id)
        except Exception:
            return {}
        if current.get("membership") != "join" or current.get(key) == value:
            return {}
        content = {k: v for k, v in current.items() if k != key}
        if value is not None:
            content[key] = value
        created = await self._rooms.send_state(requester, room_id, "m.room.member", user_id, content)
        return {"event_id": created.event.event_id}


def _internal_requester(user_id: str) -> Requester:
    return Requester(user_id=user_id, device_id=None, is_guest=False, access_token_id=0, is_admin=False)
