"""A deactivated account leaves its rooms.

Synapse's deactivation removes the user from every room they are in and
rejects their pending invites (and knocks); clients of the other members
then see the departure. :class:`RoomParter` is an ``AccountHandler``
deactivation observer doing the same, for the user's own
``/account/deactivate`` and the admin API alike. Each leave is a room
command (:class:`homeserver.handlers.rooms.commands.RoomCommands`), so it
runs on the owner of the room's events shard whichever instance handled
the deactivation. It runs after the deactivation committed (the response
does not wait for it, as in Synapse); one room's refusal (a server notices
room, say) is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from homeserver.handlers.auth import Requester

logger = logging.getLogger(__name__)

#: Memberships a deactivated user gives up.
PARTED = ("join", "invite", "knock")


class RoomParter:
    """``memberships`` lists a user's memberships (``get_memberships_for_user``); ``commands``
    is the process's ``RoomCommands``."""

    def __init__(self, memberships: Any, commands: Any) -> None:
        self._memberships = memberships
        self._commands = commands
        #: Partings under way (tests wait for them).
        self.pending: list[defer.Deferred] = []

    def on_deactivated(self, user_id: str, erase: bool) -> None:
        """The deactivation observer: start leaving every room, log failures."""
        d = defer.ensureDeferred(self.part_all(user_id))
        self.pending.append(d)

        def done(result: Any) -> Any:
            self.pending.remove(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: logger.warning("could not part %s from its rooms: %s", user_id, f.getErrorMessage()))

    async def part_all(self, user_id: str) -> int:
        """Leave every joined room, reject every invite and knock; returns how many rooms were left."""
        requester = Requester(user_id=user_id, device_id=None, is_guest=False, access_token_id=0, is_admin=False)
        parted = 0
        for membership in await self._memberships.get_memberships_for_user(user_id):
            if membership.membership not in PARTED:
                continue
            try:
                await self._commands.leave(requester, membership.room_id, None)
            except Exception as e:  # one room's refusal must not keep the user in the others
                logger.warning("deactivated %s could not leave %s: %s", user_id, membership.room_id, e)
                continue
            parted += 1
        return parted
