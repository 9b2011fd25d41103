"""Presence writers, readers and their commands.

The ``presence`` stream is sharded by user ID (DESIGN.md §3): the owner of a
user's shard is the only writer of their presence. It keeps the users of its
shards in memory, applies status updates, /sync activity and timeouts
(:mod:`homeserver.core.presence`), and stores a change clients should hear
of at a new position of the shard, which the allocator publishes on the bus
after commit. Other instances reach the owner through the
``presence.set`` / ``presence.sync`` commands; reads come from PostgreSQL.

With presence disabled (config ``presence.enabled: false``), as Synapse
does, ``PUT /status`` still answers 200 but nothing is stored or sent, /sync
carries no presence, and ``GET /status`` reports ``offline``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer, task

from homeserver.core import presence as p
from homeserver.errors import bad_json, forbidden, invalid_param, not_found
from homeserver.handlers.rooms.linearizer import Linearizer

logger = logging.getLogger(__name__)

#: How often the writer looks for users to time out (seconds).
TIMER_INTERVAL_S = 5.0
#: A /sync worker forwards the same ``set_presence`` of a user at most this often (seconds):
#: well under the idle and offline timeouts, so a syncing user never times out.
SYNC_REPORT_INTERVAL_S = 30.0
MAX_STATUS_MSG = 1024


class PresenceWriter:
    """The presence of the users in the shards this instance owns."""

    def __init__(self, clock: Any, store: Any, allocators: Mapping[int, Any], shard_of: Callable[[str], int],
                 enabled: bool = True) -> None:
        self._clock = clock
        self.clock = clock
        self._store = store
        self._allocators = allocators
        self._shard_of = shard_of
        self.enabled = enabled
        self._current: dict[str, p.UserPresence] = {}
        # What was last stored (and announced) per cached user: changes are
        # judged against it, so continuous activity is re-announced each
        # CURRENTLY_ACTIVE_MS rather than never.
        self._stored: dict[str, p.UserPresence] = {}
        self._lock = Linearizer("presence")
        self._loop: Optional[task.LoopingCall] = None
        #: Called with each stored change (after commit): federation sends local users' changes out.
        self.observers: list[Callable[[p.UserPresence], None]] = []

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def start(self) -> None:
        """Load the owned users who are not offline and start timing them out."""
        if not self.enabled or not self._allocators:
            return
        for shard in sorted(self._allocators):
            for row in await self._store.get_not_offline(shard):
                self._current[row.presence.user_id] = row.presence
                self._stored[row.presence.user_id] = row.presence
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(TIMER_INTERVAL_S, now=False)

    def stop(self) -> None:
        """Stop the timeout timer."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _tick(self) -> Any:
        d = defer.ensureDeferred(self.check_timeouts())
        d.addErrback(lambda f: logger.warning("presence timeouts failed: %s", f.getErrorMessage()))
        return d

    async def _get(self, user_id: str) -> tuple[p.UserPresence, p.UserPresence]:
        """The user's current presence and the one last stored."""
        current = self._current.get(user_id)
        if current is None:
            rows = await self._store.get_presence([user_id])
            current = rows[user_id].presence if user_id in rows else p.UserPresence(user_id)
            return current, current
        return current, self._stored.get(user_id, current)

    async def _apply(self, user_id: str, change: Callable[[p.UserPresence], Optional[p.UserPresence]],
                     timed: bool = True) -> None:
        shard = self._shard_of(user_id)
        allocator = self._allocators.get(shard)
        if allocator is None:
            raise RuntimeError(f"presence shard {shard} of {user_id} is not owned here")
        async with self._lock.lock(user_id):
            old, stored = await self._get(user_id)
            new = change(old)
            if new is None:
                return
            if p.is_change(stored, new):
                await self._store.upsert(allocator, new, on_row=lambda row: allocator.attach(row.stream_position, row.to_payload()))
                stored = new
                for observer in self.observers:
                    try:
                        observer(new)
                    except Exception:
                        logger.exception("presence observer failed")
            if new.state == p.OFFLINE or not timed:
                self._current.pop(user_id, None)
                self._stored.pop(user_id, None)
            else:
                self._current[user_id] = new
                self._stored[user_id] = stored

    async def set_status(self, user_id: str, presence: str, status_msg: Optional[str]) -> None:
        """The user set their presence (``PUT /presence/{userId}/status``)."""
        if not self.enabled:
            return
        now = self._now()
        await self._apply(user_id, lambda old: p.set_status(old, presence, status_msg, now))

    async def user_syncing(self, user_id: str, set_presence: str) -> None:
        """The user called /sync with ``set_presence``."""
        if not self.enabled:
            return
        now = self._now()
        await self._apply(user_id, lambda old: p.on_sync(old, set_presence, now))

    async def set_remote(self, presence: p.UserPresence) -> None:
        """A user of another server, as their server told us (``m.presence`` EDU).

        Stored and announced like a local change, but not timed out here:
        the user's own server keeps their timeouts and tells us.
        """
        if not self.enabled:
            return
        await self._apply(presence.user_id, lambda old: presence, timed=False)

    async def check_timeouts(self) -> int:
        """Move idle users to unavailable and gone ones to offline; returns how many changed."""
        now = self._now()
        due = [u for u, cur in self._current.items() if (p.next_deadline(cur) or now + 1) <= now]
        for user_id in due:
            await self._apply(user_id, lambda old: p.on_timer(old, now))
        return len(due)


class PresenceReader:
    """``GET /presence/{userId}/status`` from PostgreSQL."""

    def __init__(self, clock: Any, store: Any, enabled: bool = True) -> None:
        self._clock = clock
        self._store = store
        self.enabled = enabled

    async def get_status(self, requester: Any, user_id: str) -> dict[str, Any]:
        """The presence of ``user_id``: visible to themselves and to users sharing a room with them (else 403)."""
        if user_id != requester.user_id and not await self._store.shares_room(requester.user_id, user_id):
            raise forbidden("You are not allowed to see their presence")
        now = int(self._clock.seconds() * 1000)
        if not self.enabled:
            return {"presence": p.OFFLINE}
        rows = await self._store.get_presence([user_id])
        if user_id not in rows:
            if user_id == requester.user_id:
                return {"presence": p.OFFLINE}
            raise not_found("No presence for this user")
        return p.to_client(rows[user_id].presence, now)


def parse_status_body(body: Mapping[str, Any]) -> tuple[str, Optional[str]]:
    """``presence`` and ``status_msg`` of a PUT /status body (400 on bad values)."""
    presence = body.get("presence")
    if presence not in p.STATES:
        raise invalid_param("'presence' must be online, unavailable or offline")
    status_msg = body.get("status_msg")
    if status_msg is not None and not isinstance(status_msg, str):
        raise bad_json("'status_msg' must be a string")
    if status_msg is not None and len(status_msg) > MAX_STATUS_MSG:
        raise invalid_param("'status_msg' is too long")
    return presence, status_msg


class PresenceCommands:
    """Presence writes as commands run on the owner of the user's ``presence`` shard."""

    def __init__(self, dispatcher: Any, writer: PresenceWriter, clock: Any = None) -> None:
        self._dispatcher = dispatcher
        self._writer = writer
        self._clock = clock
        # user -> (set_presence, when) of the last /sync report forwarded from here.
        self._reported: dict[str, tuple[str, float]] = {}

    def register(self) -> None:
        """Register ``presence.set`` and ``presence.sync`` with the dispatcher."""
        self._dispatcher.register("presence.set", "presence", self._set)
        self._dispatcher.register("presence.sync", "presence", self._sync)
        self._dispatcher.register("presence.remote", "presence", self._remote)

    async def set_status(self, requester: Any, user_id: str, body: Mapping[str, Any]) -> None:
        """PUT /presence/{userId}/status: only for oneself."""
        if user_id != requester.user_id:
            raise forbidden("You may only set your own presence")
        presence, status_msg = parse_status_body(body)
        if not self._writer.enabled:
            return
        await self._dispatcher.run("presence.set", user_id, {"user_id": user_id, "presence": presence,
                                                             "status_msg": status_msg})

    async def user_syncing(self, user_id: str, set_presence: str) -> None:
        """A /sync with ``set_presence`` by ``user_id``."""
        if not self._writer.enabled or set_presence == p.OFFLINE:
            return
        if self._clock is not None:
            now = self._clock.seconds()
            last = self._reported.get(user_id)
            if last is not None and last[0] == set_presence and now - last[1] < SYNC_REPORT_INTERVAL_S:
                return
            if len(self._reported) > 100_000:
                self._reported = {u: r for u, r in self._reported.items() if now - r[1] < SYNC_REPORT_INTERVAL_S}
            self._reported[user_id] = (set_presence, now)
        await self._dispatcher.run("presence.sync", user_id, {"user_id": user_id, "set_presence": set_presence})

    async def _set(self, args: dict[str, Any]) -> dict[str, Any]:
        presence, status_msg = parse_status_body(args)
        await self._writer.set_status(str(args["user_id"]), presence, status_msg)
        return {}

    async def _sync(self, args: dict[str, Any]) -> dict[str, Any]:
        set_presence = args.get("set_presence")
        if set_presence not in p.STATES:
            raise invalid_param("bad set_presence")
        await self._writer.user_syncing(str(args["user_id"]), set_presence)
        return {}

    async def _remote(self, args: dict[str, Any]) -> dict[str, Any]:
        presence = p.from_federation(args.get("entry"), int(self._writer.clock.seconds() * 1000))
        if presence is None:
            raise bad_json("malformed presence entry")
        if presence.status_msg is not None and len(presence.status_msg) > MAX_STATUS_MSG:
            raise invalid_param("'status_msg' is too long")
        await self._writer.set_remote(presence)
        return {}
