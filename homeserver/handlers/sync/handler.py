"""/sync: initial and incremental, long-polling on the stream tails.

The token is the per-shard position vector of DESIGN.md §3
(:class:`StreamToken`). ``now`` is what the tails know completely; a sync
returns everything concerning the user in ``(since, now]`` and
``next_batch = now``, so consecutive syncs partition the streams: nothing is
returned twice and nothing is skipped (invariant 2). The tails tell which
rooms changed (falling back to PostgreSQL for ranges they do not hold);
timelines and state are read from PostgreSQL per changed room.

An empty incremental sync waits (up to ``timeout``) on the
:class:`Notifier`, which the tails wake for new rows concerning the user's
rooms or the user.
"""

from __future__ import annotations

import collections
import inspect
import json
import logging
from typing import Any, Callable, Mapping, Optional

import attrs
from prometheus_client import Counter
from twisted.internet import defer
from twisted.internet.task import deferLater

from homeserver.errors import Codes, MatrixError, invalid_param
from homeserver.handlers.rooms.events import EventLoader, stripped_state
from homeserver.handlers.rooms.filters import SyncFilter, apply_event_fields
from homeserver.handlers.rooms.tokens import InvalidTokenError, StreamToken, TopoToken
from homeserver.handlers.rooms.visibility import VisibilityHistory
from homeserver.handlers.sync.assembly import lazy_members, receipt_contents, room_summary, timeline_state
from homeserver.handlers.sync.memberships import MembershipCache
from homeserver.handlers.sync.notifier import Notifier
from homeserver.handlers.sync.tail import StreamTail

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]

#: Stripped state given with invites (client-server-api "Stripped state").
INVITE_STATE_TYPES = (
    "m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
    "m.room.canonical_alias", "m.room.encryption", "m.room.topic",
)
#: How long a sync waits for this process' own writes to come back from the bus.
READ_YOUR_WRITES_TIMEOUT = 10.0
#: Answered tokens remembered for ``sync.min_interval_ms`` (least recent out).
MAX_REMEMBERED_ANSWERS = 100_000
MAX_TIMEOUT_MS = 5 * 60 * 1000

BUILDS = Counter("estuary_sync_builds_total", "/sync responses built (a long-poll may build several)")


class WriteTracker:
    """The last events positions each user wrote through this process (read your writes)."""

    def __init__(self) -> None:
        self._last: dict[str, dict[int, int]] = {}

    def record(self, user_id: str, shard: int, position: int) -> None:
        """Remember that ``user_id`` produced ``position`` on events ``shard``."""
        shards = self._last.setdefault(user_id, {})
        if position > shards.get(shard, 0):
            shards[shard] = position

    def positions(self, user_id: str) -> dict[int, int]:
        """Shard -> last position written by the user here."""
        return dict(self._last.get(user_id, {}))


class TypingState:
    """Who is typing where, as announced on the typing stream (a tail listener)."""

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[int, int, tuple[str, ...]]] = {}

    def on_row(self, shard: int, row: Any) -> None:
        """Record a typing row ``(shard, position, room_id, user_ids)``."""
        self.rooms[row.room_id] = (shard, row.stream_position, row.user_ids)

    def on_reset(self, shard: int, position: int) -> list[str]:
        """Updates of ``shard`` were lost (e.g. its writer restarted and forgot who types):
        nobody types there any more as of ``position``. Returns the rooms that changed."""
        changed = [room for room, (s, _, users) in self.rooms.items() if s == shard and users]
        for room in changed:
            self.rooms[room] = (shard, position, ())
        return changed


@attrs.frozen
class TypingRow:
    """A typing announcement: the whole typing set of one room."""

    stream_position: int
    room_id: str
    user_ids: tuple[str, ...]

    @classmethod
    def from_payload(cls, shard: int, position: int, payload: Any) -> "TypingRow":
        """Decode a bus payload (``ValueError`` if malformed)."""
        room_id = payload.get("room_id") if isinstance(payload, Mapping) else None
        users = payload.get("user_ids") if isinstance(payload, Mapping) else None
        if not isinstance(room_id, str) or not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ValueError("bad typing payload")
        return cls(position, room_id, tuple(users))


@attrs.frozen
class SyncDeps:
    """What the sync handler reads from."""

    events_store: Any
    receipts_store: Any
    loader: EventLoader
    events_tail: StreamTail
    receipts_tail: StreamTail
    typing_tail: StreamTail
    typing_state: TypingState
    notifier: Notifier
    shard_counts: Mapping[str, int]
    events_shard_of: Callable[[str], int]
    receipts_shard_of: Callable[[str], int]
    typing_shard_of: Callable[[str], int]
    account_data_store: Any = None
    #: A WriteTracker, or anything whose ``positions(user_id)`` returns (or awaits to) shard -> position.
    writes: Any = None
    #: ``homeserver.handlers.sync.presence.PresenceSource`` (None: no presence in responses).
    presence: Any = None
    #: ``homeserver.handlers.sync.to_device.ToDeviceSource`` (None: no to-device messages).
    to_device: Any = None
    #: ``homeserver.handlers.sync.device_lists.DeviceListSource`` (None: no device lists or key counts).
    device_lists: Any = None


class SyncHandler:
    """Answers /sync from the tails and PostgreSQL."""

    def __init__(self, clock: Any, deps: SyncDeps, batch_window: float = 0.0, min_interval: float = 0.0) -> None:
        self._clock = clock
        self.d = deps
        #: ``sync.wake_batch_ms`` in seconds: see :meth:`_hold`.
        self._batch_window = batch_window
        #: ``sync.min_interval_ms`` in seconds: see :meth:`_not_before`.
        self._min_interval = min_interval
        #: next_batch -> when it was answered, for the tokens answered lately.
        self._answered: "collections.OrderedDict[str, float]" = collections.OrderedDict()
        #: The syncing users' memberships between builds, dropped by the events tail.
        self.memberships = MembershipCache(lambda user_id: deps.events_store.get_memberships_for_user(user_id))
        if hasattr(deps.events_tail, "add_early_listener") and hasattr(deps.events_tail, "add_reset_listener"):
            # Early: dropped before the row's position is current, so no build
            # woken by it (or waiting for it) can read what it made stale.
            deps.events_tail.add_early_listener(self.memberships.on_row)
            deps.events_tail.add_reset_listener(lambda shard, position: self.memberships.clear())

    def current_token(self, at_least: Optional[StreamToken] = None) -> StreamToken:
        """What the tails know completely now (never behind ``at_least``)."""
        account = at_least.account_data if at_least is not None else 0
        token = StreamToken(
            events=self.d.events_tail.current(),
            receipts=self.d.receipts_tail.current(),
            typing=self.d.typing_tail.current(),
            account_data=account,
            presence=self.d.presence.current() if self.d.presence is not None else (),
            to_device=self.d.to_device.current() if self.d.to_device is not None else (),
            device_lists=self.d.device_lists.current() if self.d.device_lists is not None else (),
        )
        return token.max_with(at_least) if at_least is not None else token

    async def load_filter(self, requester: Any, raw: Optional[str]) -> SyncFilter:
        """The sync filter from an inline JSON object or a stored filter ID."""
        if raw is None:
            return SyncFilter()
        if raw.lstrip().startswith("{"):
            try:
                body = json.loads(raw)
            except ValueError:
                raise invalid_param("filter is not valid JSON")
            return SyncFilter.parse(body)
        store = self.d.account_data_store
        if store is None or not raw.isdigit():
            raise invalid_param("Unknown filter")
        body = await store.get_filter(requester.user_id, int(raw))
        if body is None:
            raise invalid_param("Unknown filter")
        return SyncFilter.parse(body)

    async def sync(self, requester: Any, since: Optional[str], timeout_ms: int, filter_raw: Optional[str],
                   full_state: bool = False, use_state_after: bool = False) -> dict[str, Any]:
        """One /sync request (``use_state_after``: spec v1.16, state up to the *end* of the timeline)."""
        sync_filter = await self.load_filter(requester, filter_raw)
        since_token = None
        if since is not None:
            try:
                since_token = StreamToken.decode(since, self.d.shard_counts)
            except InvalidTokenError as e:
                raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid since token: {e}")
        timeout = max(0, min(timeout_ms, MAX_TIMEOUT_MS)) / 1000.0
        deadline = self._clock.seconds() + timeout
        await self._await_positions(requester.user_id, since_token, deadline)
        long_poll = since_token is not None and not full_state and timeout > 0
        not_before = self._not_before(since) if long_poll else None
        if long_poll:
            await self._hold(since_token, deadline, not_before)
        response = await self._sync_loop(requester, sync_filter, since_token, full_state, use_state_after,
                                         deadline, not_before)
        if long_poll or since_token is None:
            self._remember_answer(response["next_batch"])
        return response

    async def _sync_loop(self, requester: Any, sync_filter: SyncFilter, since_token: Optional[StreamToken],
                         full_state: bool, use_state_after: bool, deadline: float,
                         not_before: Optional[float]) -> dict[str, Any]:
        """Build until there is something to answer, or the long-poll's time is up."""
        first = True
        while True:
            if not first and not_before is not None:
                # Something new came after an empty build: answer no sooner than the minimum interval.
                await self._sleep_until(min(not_before, deadline))
            first = False
            generation = self.d.notifier.generation(requester.user_id)
            now = self.current_token(since_token)
            response, rooms, now = await self._build(requester, sync_filter, since_token, now, full_state, use_state_after)
            empty = (not any(response["rooms"].values()) and not response["account_data"]["events"]
                     and not response["presence"]["events"] and not response["to_device"]["events"]
                     and not response["device_lists"]["changed"] and not response["device_lists"]["left"])
            remaining = deadline - self._clock.seconds()
            if since_token is None or full_state or not empty or remaining <= 0:
                return response
            if self._relevant_after(requester.user_id, rooms, now):
                continue
            if self.d.notifier.generation(requester.user_id) != generation:
                # Woken while building (account data, to-device, device lists...): look again.
                continue
            woken = await self.d.notifier.wait(requester.user_id, rooms, remaining)
            if not woken:
                # One last look with the newest positions, then answer.
                now = self.current_token(since_token)
                response, _, _ = await self._build(requester, sync_filter, since_token, now, full_state, use_state_after)
                return response

    def _not_before(self, since: str) -> Optional[float]:
        """When a long-poll continuing from ``since`` may be answered at the earliest:
        ``sync.min_interval_ms`` after ``since`` was answered here (None: no limit).

        A client long-polls again as soon as it has an answer. While events
        keep coming, each answer would carry the one or two that arrived while
        the last was being built, and the faster the server, the more answers
        per event it builds. Spacing a client's answers by a short interval
        (100 ms by default: below what a person notices) makes each carry what
        arrived meanwhile, whatever the load or the layout. Only tokens this
        process answered are known; after a restart, or when another instance
        answered, nothing is held.
        """
        if self._min_interval <= 0:
            return None
        answered = self._answered.get(since)
        return answered + self._min_interval if answered is not None else None

    def _remember_answer(self, next_batch: str) -> None:
        if self._min_interval <= 0:
            return
        self._answered[next_batch] = self._clock.seconds()
        self._answered.move_to_end(next_batch)
        while len(self._answered) > MAX_REMEMBERED_ANSWERS:
            self._answered.popitem(last=False)

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock.seconds()
        if delay > 0:
            await deferLater(self._clock, delay, lambda: None)

    async def _hold(self, since: StreamToken, deadline: float, not_before: Optional[float] = None) -> None:
        """Let a burst finish arriving before answering a long-poll that has new events already.

        The same bounded window as the notifier's (which covers long-polls
        woken while waiting): the response is built no earlier than
        ``batch_window`` after the first event newer than ``since`` arrived
        here, so a client polling again right after a response gets the
        rest of the burst in one response instead of one response per
        event. Events of rooms the user is not in count too (which rooms
        the user is in is not known before building); that delays an
        answer by at most the window. Nothing is held once the window has
        passed, for non-long-poll requests, or past the request's timeout.
        ``not_before`` (see :meth:`_not_before`) holds it longer.
        """
        if self._batch_window <= 0 and not_before is None:
            return
        first = self.d.events_tail.first_arrival_after(since.events)
        if first is None:
            return
        await self._sleep_until(min(max(first + self._batch_window, not_before or 0.0), deadline))

    async def _await_positions(self, user_id: str, since: Optional[StreamToken], deadline: float) -> None:
        """Read your writes: wait until the tails have seen the user's writes and the client's token."""
        wanted: dict[int, int] = {}
        if self.d.writes is not None:
            known = self.d.writes.positions(user_id)
            if inspect.isawaitable(known):
                known = await known
            wanted = dict(known)
        if since is not None:
            for shard, position in enumerate(since.events):
                wanted[shard] = max(wanted.get(shard, 0), position)
        current = self.d.events_tail.current()
        waits = []
        for shard, position in wanted.items():
            if current[shard] < position:
                limit = max(READ_YOUR_WRITES_TIMEOUT, deadline - self._clock.seconds())
                waits.append(self.d.events_tail.wait_for(shard, position, limit))
        if waits:
            await defer.gatherResults(waits)

    def _relevant_after(self, user_id: str, rooms: frozenset[str], token: StreamToken) -> bool:
        """Whether the tails hold something for the user after ``token`` (checked before sleeping)."""
        tail = self.d.events_tail
        for shard, (after, upto) in enumerate(zip(token.events, tail.current())):
            if upto <= after:
                continue
            rows = tail.rows(shard, after, upto)
            if rows is None:
                return True
            for row in rows:
                if row.room_id in rooms or (row.type == "m.room.member" and row.state_key == user_id):
                    return True
        rtail = self.d.receipts_tail
        for shard, (after, upto) in enumerate(zip(token.receipts, rtail.current())):
            if upto > after:
                rows = rtail.rows(shard, after, upto)
                if rows is None or any(r.room_id in rooms for r in rows):
                    return True
        for room_id, (shard, position, _) in self.d.typing_state.rooms.items():
            if room_id in rooms and position > token.typing[shard]:
                return True
        if self.d.presence is not None and token.presence and self.d.presence.changed_after(token.presence):
            # Someone's presence changed since the token was built: one more look.
            return True
        if self.d.to_device is not None and token.to_device and self.d.to_device.pending_after(user_id, token.to_device):
            return True
        if self.d.device_lists is not None and token.device_lists and self.d.device_lists.pending_after(token.device_lists):
            return True
        return False

    # -- building the response ------------------------------------------------

    async def _build(self, requester: Any, sync_filter: SyncFilter, since: Optional[StreamToken], now: StreamToken,
                     full_state: bool, use_state_after: bool = False) -> tuple[dict[str, Any], frozenset[str], StreamToken]:
        BUILDS.inc()
        user_id = requester.user_id
        d = self.d
        memberships = await self._memberships_for(user_id, since, full_state)
        interesting = frozenset(m.room_id for m in memberships if m.membership in ("join", "invite", "knock"))

        account_global: list[dict[str, Any]] = []
        account_rooms: dict[str, list[dict[str, Any]]] = {}
        if d.account_data_store is not None:
            changes = await d.account_data_store.get_changes_since(user_id, since.account_data if since else 0)
            top = now.account_data
            for room_id, data_type, content, stream_id in changes:
                top = max(top, stream_id)
                item = {"type": data_type, "content": content}
                if room_id is None:
                    if sync_filter.account_data.allows_type(data_type):
                        account_global.append(item)
                elif sync_filter.room.account_data.allows_type(data_type):
                    account_rooms.setdefault(room_id, []).append(item)
            now = attrs.evolve(now, account_data=top)

        changed: set[str] = set()
        if since is not None:
            by_shard: dict[int, list[str]] = {}
            for m in memberships:
                by_shard.setdefault(d.events_shard_of(m.room_id), []).append(m.room_id)
            for shard, room_ids in by_shard.items():
                after, upto = since.events[shard], now.events[shard]
                if upto <= after:
                    continue
                rows = d.events_tail.rows(shard, after, upto)
                if rows is not None:
                    wanted = set(room_ids)
                    changed.update(r.room_id for r in rows if r.room_id in wanted)
                else:
                    changed.update(await d.events_store.get_changed_rooms(shard, after, upto, room_ids))

        joined_ids = [m.room_id for m in memberships if m.membership == "join" and sync_filter.room.allows_room(m.room_id)]
        ephemeral = await self._ephemeral(user_id, joined_ids, since, now, sync_filter)

        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        initial = since is None or full_state
        # Each room's membership as of the token being built, with its positions.
        in_force: list[tuple[Any, int, int]] = []
        for m in memberships:
            if not sync_filter.room.allows_room(m.room_id):
                continue
            shard = d.events_shard_of(m.room_id)
            since_pos = since.events[shard] if since is not None else 0
            now_pos = now.events[shard]
            if m.stream_position > now_pos:
                # The membership changed after the token being built: use the
                # one in force at the token (the next sync sees the change).
                m = await self._membership_at(m, now_pos)
                if m is None:
                    continue
            in_force.append((m, since_pos, now_pos))
        # The common incremental case (a joined room with new events): every
        # such room's timeline, start state and senders' memberships in one
        # database interaction.
        timelines: dict[str, Any] = {}
        if not initial:
            ranges = [(m.room_id, since_pos, now_pos) for m, since_pos, now_pos in in_force
                      if m.membership == "join" and m.room_id in changed and m.stream_position <= since_pos]
            if ranges:
                timelines = await d.events_store.get_sync_timelines(ranges, sync_filter.timeline_limit, user_id)
        for m, since_pos, now_pos in in_force:
            room_id = m.room_id
            newly = since is not None and m.stream_position > since_pos
            if m.membership == "join":
                room_changed = room_id in changed
                if not (initial or newly or room_changed or ephemeral.get(room_id) or account_rooms.get(room_id)):
                    continue
                section = await self._room_section(
                    requester, sync_filter, room_id, since_pos, now_pos, initial or newly,
                    room_changed or initial or newly, None, use_state_after, timelines.get(room_id),
                )
                if ephemeral.get(room_id):
                    section["ephemeral"] = {"events": ephemeral[room_id]}
                if account_rooms.get(room_id):
                    section["account_data"] = {"events": account_rooms[room_id]}
                if initial or newly or room_changed or "ephemeral" in section or "account_data" in section:
                    section.setdefault("ephemeral", {"events": []})
                    section.setdefault("account_data", {"events": []})
                    join[room_id] = section
            elif m.membership == "invite":
                if initial or newly:
                    invite[room_id] = {"invite_state": {"events": await self._invite_state(room_id, m.event_id)}}
            elif m.membership == "knock":
                if initial or newly:
                    knock[room_id] = {"knock_state": {"events": await self._invite_state(room_id, m.event_id)}}
            elif m.membership in ("leave", "ban"):
                if m.forgotten:
                    continue
                if (initial and sync_filter.room.include_leave) or (not initial and newly):
                    section = await self._room_section(
                        requester, sync_filter, room_id, since_pos if not initial else 0, m.stream_position,
                        initial, True, m.stream_position, use_state_after,
                    )
                    section["account_data"] = {"events": account_rooms.get(room_id, [])}
                    leave[room_id] = section

        to_device: list[dict[str, Any]] = []
        if self.d.to_device is not None:
            to_device, positions = await self.d.to_device.take(
                user_id, requester.device_id, since.to_device if since is not None else None, now.to_device)
            now = attrs.evolve(now, to_device=positions)
        device_lists: dict[str, list[str]] = {"changed": [], "left": []}
        otk_counts: dict[str, int] = {}
        fallback_types: list[str] = []
        if self.d.device_lists is not None:
            source = self.d.device_lists
            if since is not None and since.device_lists:
                # Only rooms with events in the range can hold membership changes.
                changed_users, left_users = await source.changes(
                    user_id, sorted(changed), since.events, now.events, since.device_lists, now.device_lists)
                device_lists = {"changed": changed_users, "left": left_users}
            otk_counts, fallback_types = await source.key_counts(user_id, requester.device_id)
        response = {
            "next_batch": now.encode(),
            "to_device": {"events": to_device},
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": account_global},
            "presence": {"events": await self._presence(user_id, sync_filter, since, now)},
            "device_lists": device_lists,
            "device_one_time_keys_count": otk_counts,
            "device_unused_fallback_key_types": fallback_types,
        }
        for section in join.values():
            # No push rules are evaluated yet, so no event counts as a
            # notification or highlight: 0 is the honest count.
            section.setdefault("unread_notifications", {"highlight_count": 0, "notification_count": 0})
        return response, interesting, now

    async def _memberships_for(self, user_id: str, since: Optional[StreamToken], full_state: bool) -> list[Any]:
        """The user's memberships: from the cache for incremental syncs, unless a room was left
        in the range (whether it was forgotten since is only in PostgreSQL)."""
        d = self.d
        if since is None or full_state:
            return await d.events_store.get_memberships_for_user(user_id)
        memberships = await self.memberships.get(user_id)
        if any(m.membership in ("leave", "ban") and m.stream_position > since.events[d.events_shard_of(m.room_id)]
               for m in memberships):
            return await d.events_store.get_memberships_for_user(user_id)
        return memberships

    async def _presence(self, user_id: str, sync_filter: SyncFilter, since: Optional[StreamToken],
                        now: StreamToken) -> list[dict[str, Any]]:
        """The ``presence.events`` of the response (room mates' changes in ``(since, now]``)."""
        if self.d.presence is None or not now.presence:
            return []
        events = await self.d.presence.events(user_id, since.presence if since is not None else None, now.presence)
        return [e for e in events if sync_filter.presence.allows(e)]

    async def _room_section(self, requester: Any, sync_filter: SyncFilter, room_id: str, since_pos: int, upto: int,
                            full: bool, changed: bool, left_at: Optional[int], use_state_after: bool = False,
                            timeline: Any = None) -> dict[str, Any]:
        """One room's part of the response (``timeline``: what ``get_sync_timelines``
        returned for the room; :meth:`_build` reads it for every room of the
        incremental case below)."""
        d = self.d
        user_id = requester.user_id
        limit = sync_filter.timeline_limit
        rows: list[Any] = []
        limited = False
        # Rows already read (membership events of the timeline's senders).
        prefetched: dict[str, Any] = {}
        start_found: Any = None
        have_start = False
        if changed and not full and left_at is None:
            # The common incremental case: timeline, start state and the
            # senders' memberships in one database round trip.
            rows, limited, start_found, prefetched = timeline
            have_start = True
        elif changed:
            after = 0 if full else since_pos
            rows, limited = await d.events_store.get_room_events_in_range(room_id, after, upto, limit)
            if full or left_at is not None:
                memberships, visibilities = await d.events_store.get_visibility_history(room_id, user_id)
                history = VisibilityHistory(tuple(memberships), tuple(visibilities))
                visible = [r for r in rows if history.visible(
                    r.stream_position, is_own_membership=r.type == "m.room.member" and r.state_key == user_id)]
                if len(visible) != len(rows):
                    limited = False if not visible else limited
                rows = visible
        if have_start:
            pass
        elif rows:
            start_found = await d.events_store.get_state_at_position(room_id, rows[0].stream_position - 1)
        elif full:
            start_found = await d.events_store.get_state_at_position(room_id, upto)
        start_state = start_found[1] if start_found else {}
        since_state = None
        if not full and limited and rows:
            since_found = await d.events_store.get_state_at_position(room_id, since_pos)
            since_state = since_found[1] if since_found else {}
        state_ids = timeline_state(start_state, since_state, full, limited and bool(rows))
        if use_state_after:
            # Spec v1.16: state between the token and the *end* of the timeline.
            if full or rows:
                end_found = await d.events_store.get_state_at_position(room_id, rows[-1].stream_position if rows else upto)
                end_state = end_found[1] if end_found else {}
                if full:
                    state_ids = dict(end_state)
                else:
                    if since_state is None:
                        since_found = await d.events_store.get_state_at_position(room_id, since_pos)
                        since_state = since_found[1] if since_found else {}
                    state_ids = {k: v for k, v in end_state.items() if since_state.get(k) != v}
            else:
                state_ids = {}

        timeline_json = await d.loader.serialize_rows(
            room_id, rows, txn_ids=await self._txn_ids(requester, room_id, rows), include_room_id=False
        )
        timeline_json = [apply_event_fields(e, sync_filter.event_fields) for e in timeline_json
                         if sync_filter.room.timeline.allows(e)]

        state_filter = sync_filter.room.state
        if state_filter.lazy_load_members:
            senders = {e["sender"] for e in timeline_json} | {user_id}
            state_ids = lazy_members(state_ids, start_state, senders, full or not rows)
        state_rows = {e: prefetched[e] for e in state_ids.values() if e in prefetched}
        missing = [e for e in state_ids.values() if e not in state_rows]
        if missing:
            state_rows.update(await d.events_store.get_events(room_id, missing))
        state_json = await d.loader.serialize_rows(
            room_id, sorted(state_rows.values(), key=lambda r: r.stream_position), include_room_id=False
        )
        state_json = [apply_event_fields(e, sync_filter.event_fields) for e in state_json if state_filter.allows(e)]

        prev_batch = TopoToken(rows[0].depth, rows[0].stream_position).encode() if rows else None
        section: dict[str, Any] = {
            "timeline": {"events": timeline_json, "limited": limited},
            ("state_after" if use_state_after else "state"): {"events": state_json},
        }
        if prev_batch is not None:
            section["timeline"]["prev_batch"] = prev_batch
        if left_at is None and (full or any(r.type == "m.room.member" for r in rows)):
            section["summary"] = await self._summary(room_id, user_id)
        if left_at is None and not timeline_json and not state_json and not full and not changed:
            section["timeline"] = {"events": [], "limited": False}
        return section

    async def _membership_at(self, current: Any, position: int) -> Any:
        """``current`` (a membership row) as it was at ``position``, or None if the user had none."""
        found = await self.d.events_store.get_state_at_position(current.room_id, position)
        event_id = found[1].get(("m.room.member", current.user_id)) if found else None
        if event_id is None:
            return None
        rows = await self.d.events_store.get_events(current.room_id, [event_id])
        row = rows.get(event_id)
        if row is None or row.membership is None:
            return None
        return attrs.evolve(current, membership=row.membership, event_id=event_id, sender=row.sender,
                            stream_position=row.stream_position, forgotten=False)

    async def _txn_ids(self, requester: Any, room_id: str, rows: list[Any]) -> dict[str, str]:
        own = [r.event_id for r in rows if r.sender == requester.user_id]
        if not own:
            return {}
        device = requester.device_id if requester.device_id is not None else f"token:{requester.access_token_id}"
        return await self.d.events_store.get_txn_ids_for_events(room_id, requester.user_id, device, own)

    async def _summary(self, room_id: str, user_id: str) -> dict[str, Any]:
        members = await self.d.events_store.get_room_members(room_id)
        return room_summary([(m.user_id, m.membership) for m in members], user_id)

    async def _invite_state(self, room_id: str, invite_event_id: str) -> list[dict[str, Any]]:
        """Stripped state for an invite (or a knock): key room state plus the membership event itself."""
        state = await self.d.events_store.get_current_state_ids(room_id)
        wanted = [state[(t, "")] for t in INVITE_STATE_TYPES if (t, "") in state]
        wanted.append(invite_event_id)
        events = await self.d.loader.get_events(room_id, wanted)
        invite = events.get(invite_event_id)
        received = None
        if invite is not None:
            received = invite.unsigned.get("invite_room_state")
            if received is None:
                received = invite.unsigned.get("knock_room_state")
        if isinstance(received, (list, tuple)) and len(state) <= 1:
            # An invite from another server to a room we are not in (or our
            # knock through another server): the stripped state that server
            # sent is all we know of the room.
            from homeserver.core.events import thaw

            return [thaw(s) for s in received if isinstance(s, Mapping)] + [stripped_state(invite)]
        return [stripped_state(events[e]) for e in wanted if e in events]

    async def _ephemeral(self, user_id: str, room_ids: list[str], since: Optional[StreamToken], now: StreamToken,
                         sync_filter: SyncFilter) -> dict[str, list[dict[str, Any]]]:
        d = self.d
        out: dict[str, list[dict[str, Any]]] = {}
        ephemeral_filter = sync_filter.room.ephemeral
        wanted = set(room_ids)
        if ephemeral_filter.allows_type("m.typing"):
            for room_id, (shard, position, users) in d.typing_state.rooms.items():
                if room_id not in wanted or position > now.typing[shard]:
                    continue
                if (since is None and users) or (since is not None and position > since.typing[shard]):
                    out.setdefault(room_id, []).append({"type": "m.typing", "content": {"user_ids": list(users)}})
        if ephemeral_filter.allows_type("m.receipt"):
            by_shard: dict[int, list[str]] = {}
            for room_id in room_ids:
                by_shard.setdefault(d.receipts_shard_of(room_id), []).append(room_id)
            for shard, rooms in by_shard.items():
                after = since.receipts[shard] if since is not None else 0
                upto = now.receipts[shard]
                if upto <= after:
                    continue
                rows = await d.receipts_store.get_receipts(rooms, after, upto)
                content_by_room = receipt_contents(rows, user_id)
                for room_id, content in content_by_room.items():
                    out.setdefault(room_id, []).append({"type": "m.receipt", "content": content})
        return out
