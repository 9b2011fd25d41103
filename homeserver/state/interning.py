"""Interning a room's events into a kernel graph, once, for many resolutions.

:class:`RoomGraph` owns one kernel ``Graph`` (C or pure Python, same surface)
plus the :class:`~homeserver.core.events.Event` objects behind its indices. It
computes, once per event, everything the kernels need: the auth edges
(including the implicit create event of room v12), the sender's power level
from the event's own auth events, the power-event flag, the first power levels
auth event (for mainline ordering), and the keys of the state the authorization
rules may consult. Nothing string-keyed is converted again afterwards except
the state maps handed to a resolution.
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Iterable, Mapping

from homeserver.state import _auth, _kernel
from homeserver.state._util import content_of

logger = logging.getLogger(__name__)

CREATE = "m.room.create"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
MEMBER = "m.room.member"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

#: Power level given to room creators in rooms where they have infinite power
#: (MSC4289, room v12), for the power ordering only. Synapse uses 2**53, which
#: is above any power level a canonical-JSON integer can express.
CREATOR_POWER_LEVEL = 2**53

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _clamp64(value: int) -> int:
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    return _INT64_MIN if value < 0 else _INT64_MAX




def as_power_int(value: Any) -> int:
    """Coerce a power level value the way Synapse's ``int(level)`` does for
    state resolution ordering (room versions before 10 allow strings and
    floats); values ``int()`` cannot convert count as 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _clamp64(value)
    try:
        return _clamp64(int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def is_power_event(event: Any) -> bool:
    """Whether the event is a *power event* for state resolution v2.

    Spec (rooms/fragments/v2-state-res.md, "Power events"): power levels, join
    rules, and leave/ban memberships whose sender is not the target. Synapse
    (``synapse/state/v2.py`` ``_is_power_event``) additionally counts the
    ``m.room.create`` event and requires an empty state key for power levels and
    join rules; we match Synapse so that our resolved state converges with the
    rest of the federation.
    """
    state_key = event.state_key
    if state_key is None:
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES, CREATE) and state_key == "":
        return True
    if event.type == MEMBER:
        if content_of(event).get("membership") in ("leave", "ban"):
            return event.sender != state_key
    return False


def auth_types_for_event(room_version: Any, event: Any) -> list[tuple[str, str]]:
    """The ``(type, state_key)`` keys whose current state the authorization
    rules may consult for ``event`` (server-server-api "Auth events
    selection", plus the authorising user of restricted joins and the token
    of third party invites).

    Unlike ``homeserver.core.auth.auth_types_for_event`` this always includes
    the create event, in room v12 too, as Synapse's does for state
    resolution: the current create event then overrides the implicit one
    from the event's auth events (both are the room's single create event).
    """
    if event.type == CREATE and event.state_key == "":
        return []
    keys = [(POWER_LEVELS, ""), (MEMBER, event.sender), (CREATE, "")]
    if event.type == MEMBER and isinstance(event.state_key, str):
        content = content_of(event)
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            keys.append((JOIN_RULES, ""))
        keys.append((MEMBER, event.state_key))
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, (dict, Mapping)):
                signed = tpi.get("signed")
                if isinstance(signed, (dict, Mapping)) and isinstance(signed.get("token"), str):
                    keys.append((THIRD_PARTY_INVITE, signed["token"]))
        if getattr(room_version, "restricted_join_rule", False) and membership == "join":
            via = content.get("join_authorised_via_users_server")
            if isinstance(via, str):
                keys.append((MEMBER, via))
    return keys


def effective_auth_event_ids(room_version: Any, event: Any) -> list[str]:
    """The event's auth events, plus the create event in room versions where
    the room ID is the create event's hash (v12: it is not listed in
    ``auth_events`` but authorises every event, and Synapse's
    ``auth_event_ids()`` adds it the same way)."""
    ids = list(event.auth_event_ids)
    if getattr(room_version, "room_id_is_create_event_hash", False) and not (
        event.type == CREATE and event.state_key == ""
    ):
        room_id = event.room_id
        if isinstance(room_id, str) and room_id.startswith("!"):
            create_id = "$" + room_id[1:]
            if create_id not in ids:
                ids.append(create_id)
    return ids


def is_creator(room_version: Any, create: Any, user_id: str) -> bool:
    """Whether ``user_id`` is a room creator according to ``create``
    (its sender, plus ``additional_creators`` in room v12)."""
    if create.sender == user_id:
        return True
    if getattr(room_version, "additional_creators", False):
        extra = content_of(create).get("additional_creators")
        if isinstance(extra, list):
            return user_id in [u for u in extra if isinstance(u, str)]
    return False


class RoomGraph:
    """The events of one room interned for state resolution.

    Create one per room (or per resolution, as :func:`resolve_state` does) and
    keep it: events are interned once, with their auth chains, on first use.
    Not thread-safe; resolutions on one graph must not run concurrently.
    """

    def __init__(self, room_version: Any, kernel: Any = None) -> None:
        self.room_version = room_version
        self.kernel = kernel if kernel is not None else _kernel.KERNEL
        self.graph = self.kernel.Graph()
        self.events: list[Any] = []
        self._rejected: set[str] = set()
        # Strings (types, user IDs, domains, room keys) interned for the
        # fast authorization path of the C kernel.
        self._names: dict[str, int] = {}
        self.create_event_ids: set[str] = set()
        _auth.configure(self)
        self.empty_state = self.graph.intern_state({})

    def _name_id(self, name: str) -> int:
        n = self._names.get(name)
        if n is None:
            n = self._names[name] = len(self._names)
        return n

    def __len__(self) -> int:
        return len(self.events)

    def index_of(self, event_id: str) -> int | None:
        """The index of an interned event, or None."""
        return self.graph.index.get(event_id)

    def event(self, idx: int) -> Any:
        """The event behind an index."""
        return self.events[idx]

    def mark_rejected(self, event_ids: Iterable[str], rejected: bool = True) -> None:
        """Record rejections (events rejected by the authorization rules).
        Applies to events interned now and later."""
        for event_id in event_ids:
            if rejected:
                self._rejected.add(event_id)
            else:
                self._rejected.discard(event_id)
            idx = self.graph.index.get(event_id)
            if idx is not None:
                self.graph.set_rejected(idx, rejected)

    def intern_state(self, state: Mapping[tuple[str, str], str], event_map: Mapping[str, Any] | None = None) -> Any:
        """Intern a ``(type, state_key) -> event_id`` map as a kernel
        ``StateSet``, interning its events (and their auth chains) from
        ``event_map`` first if needed. Keep the result to resolve the same
        state again without converting it (e.g. cache it per state group).
        An event found neither interned nor in ``event_map`` becomes a
        placeholder treated as rejected: it stays in the result if
        unconflicted, is never admitted if conflicted and never authorises
        anything (as Synapse drops unknown events from the full conflicted
        set)."""
        try:
            return self.graph.intern_state(state)
        except KeyError:
            pass
        index = self.graph.index
        if event_map is not None:
            self.add_events([e for e in state.values() if e not in index], event_map)
        for key, event_id in state.items():
            if event_id not in index:
                logger.warning("state resolution: unknown event %s in a state set", event_id)
                self.graph.add_event(
                    event_id, [], 0, 0, _kernel.FLAG_STATE | _kernel.FLAG_REJECTED,
                    self.graph.add_key(key), -1, [],
                )
                self.events.append(None)
        return self.graph.intern_state(state)

    def ensure(self, event_ids: Collection[str], event_map: Mapping[str, Any]) -> list[int]:
        """Intern ``event_ids`` (and their auth chains) from ``event_map`` if
        not yet interned; return their indices, skipping unknown events."""
        indices = self.graph.lookup(event_ids)
        if len(indices) == len(event_ids):
            return indices
        index = self.graph.index
        missing = [e for e in event_ids if e not in index and e in event_map]
        if not missing:
            return indices
        self.add_events(missing, event_map)
        return self.graph.lookup(event_ids)

    def add_events(self, event_ids: Iterable[str], event_map: Mapping[str, Any]) -> None:
        """Intern the given events and every event of their auth chains found
        in ``event_map``. Auth events absent from ``event_map`` and not yet
        interned are ignored, as Synapse ignores unknown auth events."""
        graph = self.graph
        index = graph.index
        rv = self.room_version
        # Iterative post-order DFS so auth events are interned first. An event
        # on the current path is "in progress": an edge back to it would be a
        # cycle (impossible with hash event IDs, possible with v1/v2 IDs sent by
        # a malicious server), and is dropped.
        in_progress: set[str] = set()
        for root in event_ids:
            if root in index or root not in event_map:
                continue
            stack: list[tuple[str, list[str]]] = []
            in_progress.add(root)
            stack.append((root, effective_auth_event_ids(rv, event_map[root])))
            while stack:
                eid, pending = stack[-1]
                pushed = False
                while pending:
                    aid = pending.pop()
                    if aid in index or aid in in_progress or aid not in event_map:
                        continue
                    in_progress.add(aid)
                    stack.append((aid, effective_auth_event_ids(rv, event_map[aid])))
                    pushed = True
                    break
                if pushed:
                    continue
                stack.pop()
                in_progress.discard(eid)
                self._intern_one(event_map[eid])

    def _intern_one(self, event: Any) -> int:
        graph = self.graph
        index = graph.index
        rv = self.room_version
        auth: list[int] = []
        pl_event = None
        create_event = None
        pl_auth = -1
        for aid in effective_auth_event_ids(rv, event):
            a = index.get(aid)
            if a is None or a in auth:
                continue
            aev = self.events[a]
            if aev is None:  # an unknown event's placeholder
                continue
            auth.append(a)
            if aev.state_key == "":
                if aev.type == POWER_LEVELS:
                    pl_event = aev
                    if pl_auth < 0:
                        pl_auth = a
                elif aev.type == CREATE and create_event is None:
                    create_event = aev
        flags = 0
        key = -1
        if event.state_key is not None:
            flags |= _kernel.FLAG_STATE
            key = graph.add_key((event.type, event.state_key))
            if event.type == POWER_LEVELS and event.state_key == "":
                flags |= _kernel.FLAG_POWER_LEVELS
        if is_power_event(event):
            flags |= _kernel.FLAG_POWER
        if event.event_id in self._rejected or getattr(event, "rejected_reason", None) is not None:
            flags |= _kernel.FLAG_REJECTED
        auth_keys = [graph.add_key(k) for k in auth_types_for_event(rv, event)]
        ts = event.origin_server_ts
        ts = _clamp64(ts) if isinstance(ts, int) and not isinstance(ts, bool) else 0
        idx = graph.add_event(
            event.event_id,
            auth,
            ts,
            self._sender_power(event, pl_event, create_event),
            flags,
            key,
            pl_auth,
            auth_keys,
        )
        self.events.append(event)
        _auth.set_auth_info(self, idx, event, self._name_id)
        return idx

    def _sender_power(self, event: Any, pl_event: Any, create_event: Any) -> int:
        """The sender's power level "when looking at their auth events", as
        Synapse computes it (``_get_power_level_for_sender``): creators of a
        v12 room have :data:`CREATOR_POWER_LEVEL`; without a power levels auth
        event the creator has 100 and everyone else 0."""
        rv = self.room_version
        sender = event.sender
        if (
            create_event is not None
            and getattr(rv, "creators_have_infinite_power", False)
            and is_creator(rv, create_event, sender)
        ):
            return CREATOR_POWER_LEVEL
        if pl_event is None:
            if create_event is not None:
                if getattr(rv, "implicit_room_creator", False):
                    creator = create_event.sender
                else:
                    creator = content_of(create_event).get("creator")
                if creator == sender:
                    return 100
            return 0
        content = content_of(pl_event)
        users = content.get("users")
        level = users.get(sender) if isinstance(users, (dict, Mapping)) else None
        if level is None:
            level = content.get("users_default", 0)
        if level is None:
            return 0
        return as_power_int(level)
