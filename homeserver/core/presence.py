"""Presence as a pure state machine (client-server-api "Presence").

A user's presence is ``online``, ``unavailable`` or ``offline`` with an
optional status message. The writer keeps, per user, when they were last
active (an explicit ``online``, or a /sync with ``set_presence=online``)
and when they last synced; time moves them on:

- online and idle for :data:`IDLE_TIMEOUT_MS` -> ``unavailable``;
- online or unavailable with no /sync nor status update for
  :data:`SYNC_TIMEOUT_MS` -> ``offline`` (the client went away).

Every function takes the current time in milliseconds and returns a new
value (or None for "no change"); nothing here reads a clock.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

ONLINE, UNAVAILABLE, OFFLINE = "online", "unavailable", "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

#: Online users idle this long become unavailable (Synapse uses 5 minutes).
IDLE_TIMEOUT_MS = 5 * 60 * 1000
#: Users neither syncing nor updating their status this long become offline.
SYNC_TIMEOUT_MS = 5 * 60 * 1000 + 30 * 1000
#: Activity this recent makes an online user "currently active".
CURRENTLY_ACTIVE_MS = 60 * 1000


@attrs.frozen
class UserPresence:
    """One user's presence as stored."""

    user_id: str
    state: str = OFFLINE
    status_msg: Optional[str] = None
    #: Last activity (ms since the epoch), 0 if never.
    last_active_ts: int = 0
    #: Last /sync or status update, 0 if never (drives the offline timeout).
    last_seen_ts: int = 0


def set_status(current: UserPresence, presence: str, status_msg: Optional[str], now: int) -> UserPresence:
    """``PUT /presence/{userId}/status``: the state and message the user chose."""
    if presence not in STATES:
        raise ValueError(presence)
    last_active = now if presence == ONLINE else current.last_active_ts
    return attrs.evolve(current, state=presence, status_msg=status_msg, last_active_ts=last_active, last_seen_ts=now)


def on_sync(current: UserPresence, set_presence: str, now: int) -> Optional[UserPresence]:
    """A /sync with ``set_presence``: ``online`` marks the user online and active,
    ``unavailable`` marks them unavailable, ``offline`` changes nothing (spec)."""
    if set_presence == OFFLINE:
        return None
    if set_presence == ONLINE:
        return attrs.evolve(current, state=ONLINE, last_active_ts=now, last_seen_ts=now)
    if set_presence == UNAVAILABLE:
        return attrs.evolve(current, state=UNAVAILABLE, last_seen_ts=now)
    raise ValueError(set_presence)


def on_timer(current: UserPresence, now: int) -> Optional[UserPresence]:
    """The state time moves ``current`` to, or None when it stays."""
    if current.state == OFFLINE:
        return None
    if now - current.last_seen_ts >= SYNC_TIMEOUT_MS:
        return attrs.evolve(current, state=OFFLINE)
    if current.state == ONLINE and now - current.last_active_ts >= IDLE_TIMEOUT_MS:
        return attrs.evolve(current, state=UNAVAILABLE)
    return None


def next_deadline(current: UserPresence) -> Optional[int]:
    """When :func:`on_timer` may next change ``current`` (ms), or None for never."""
    if current.state == OFFLINE:
        return None
    deadline = current.last_seen_ts + SYNC_TIMEOUT_MS
    if current.state == ONLINE:
        deadline = min(deadline, current.last_active_ts + IDLE_TIMEOUT_MS)
    return deadline


def is_change(old: UserPresence, new: UserPresence) -> bool:
    """Whether clients should hear of ``new`` (state, message, or a return to activity)."""
    return (old.state, old.status_msg) != (new.state, new.status_msg) or (
        new.state == ONLINE and new.last_active_ts - old.last_active_ts >= CURRENTLY_ACTIVE_MS
    )


def to_client(presence: UserPresence, now: int) -> dict[str, Any]:
    """The ``m.presence`` content (and GET /status body) as clients see it at ``now``."""
    content: dict[str, Any] = {"presence": presence.state}
    if presence.last_active_ts:
        content["last_active_ago"] = max(0, now - presence.last_active_ts)
    if presence.status_msg is not None:
        content["status_msg"] = presence.status_msg
    if presence.state == ONLINE:
        content["currently_active"] = now - presence.last_active_ts < CURRENTLY_ACTIVE_MS
    return content


def to_federation(presence: UserPresence, now: int) -> dict[str, Any]:
    """One entry of an ``m.presence`` EDU's ``push`` list (server-server API, "Presence")."""
    entry = {"user_id": presence.user_id, **to_client(presence, now)}
    entry.setdefault("last_active_ago", max(0, now - presence.last_active_ts) if presence.last_active_ts else 0)
    entry.setdefault("currently_active", False)
    return entry


def from_federation(entry: Any, now: int) -> Optional[UserPresence]:
    """A remote user's presence from a ``push`` entry, or None when it is malformed.

    ``last_active_ago`` is relative to when the EDU arrived; the remote server
    keeps its users' timeouts, so the user counts as seen now.
    """
    if not isinstance(entry, dict):
        return None
    user_id, state = entry.get("user_id"), entry.get("presence")
    ago, status_msg = entry.get("last_active_ago", 0), entry.get("status_msg")
    if not isinstance(user_id, str) or state not in STATES:
        return None
    if not isinstance(ago, int) or isinstance(ago, bool) or ago < 0:
        return None
    if status_msg is not None and not isinstance(status_msg, str):
        return None
    last_active = max(0, now - ago) if ago or state == ONLINE else 0
    return UserPresence(user_id, state, status_msg, last_active, now)
