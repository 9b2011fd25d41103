"""History visibility: which events of a room a user may see (pure).

Spec: client-server-api "History visibility". The inputs are the user's
membership changes and the room's ``m.room.history_visibility`` changes,
each as ``(stream_position, value)`` in room order; an event at position P
is judged by the state *before* it (the user's own membership events are
always visible to them).
"""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import attrs

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
DEFAULT_VISIBILITY = SHARED


@attrs.frozen
class VisibilityHistory:
    """A user's membership and a room's visibility over the room's positions."""

    memberships: tuple[tuple[int, str], ...]
    visibilities: tuple[tuple[int, str], ...]

    @staticmethod
    def _before(changes: Sequence[tuple[int, str]], position: int) -> Optional[str]:
        i = bisect.bisect_left(changes, (position, "")) - 1
        return changes[i][1] if i >= 0 else None

    def membership_before(self, position: int) -> Optional[str]:
        """The user's membership just before the event at ``position``."""
        return self._before(self.memberships, position)

    def visibility_before(self, position: int) -> str:
        """The room's history visibility just before ``position``."""
        return self._before(self.visibilities, position) or DEFAULT_VISIBILITY

    def ever_joined_after(self, position: int) -> bool:
        """Whether the user was joined at some point at or after ``position``."""
        before = self.membership_before(position)
        if before == "join":
            return True
        return any(p >= position and m == "join" for p, m in self.memberships)

    def visible(self, position: int, *, is_own_membership: bool = False) -> bool:
        """Whether the event at ``position`` is visible to the user."""
        if is_own_membership:
            return True
        visibility = self.visibility_before(position)
        if visibility == WORLD_READABLE:
            return True
        membership = self.membership_before(position)
        if membership == "join":
            return True
        if visibility == SHARED:
            return self.ever_joined_after(position) and self._left_after(position)
        if visibility == INVITED and membership == "invite":
            return True
        return False

    def _left_after(self, position: int) -> bool:
        # "shared" shows history to members; once they leave, nothing after
        # the leave is visible (the event must precede their last departure
        # unless they are joined now).
        last = self.memberships[-1] if self.memberships else None
        if last is None:
            return False
        if last[1] == "join":
            return True
        return position < last[0]
