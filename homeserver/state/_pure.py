"""Pure-Python state resolution kernels.

This module and the C extension ``homeserver.state._speedups`` expose the same
surface (see ``_speedups.pyi``): a :class:`Graph` of interned events, interned
state maps (:class:`StateSet`) and the functions :func:`separate` and
:func:`separate_interned`. The public algorithm in :mod:`homeserver.state.v2`
is written once on top of that surface, so both implementations run exactly
the same steps and must return exactly the same results. One difference is
internal: during the iterative auth checks the C kernel decides common cases
itself from pre-parsed tables (``set_auth_info``), while this module always
asks the ``check`` callback (the core authorization rules).

Events are *interned*: each event of a room gets a dense integer index, its
auth events must be interned first (so indices are a topological order of the
auth DAG: an auth event always has a smaller index than the events citing it),
and every ``(type, state_key)`` pair gets a dense key index. Kernels take and
return lists of indices; strings only appear at the edges.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Hashable, Mapping, Sequence

#: Event flag: a "power event" (see ``homeserver.state.interning``).
FLAG_POWER = 1
#: Event flag: an ``m.room.power_levels`` event with an empty state key.
FLAG_POWER_LEVELS = 2
#: Event flag: the event was rejected; it is never admitted into the resolved
#: state and it is never used to authorise another event.
FLAG_REJECTED = 4
#: Event flag: the event is a state event (it has a key index).
FLAG_STATE = 8

IMPLEMENTATION = "python"


def separate(
    state_sets: Sequence[Mapping[Hashable, str]], missing_is_conflict: bool
) -> tuple[dict[Hashable, str], dict[Hashable, list[str]]]:
    """Split state maps into the unconflicted state map and the conflicted set.

    With ``missing_is_conflict`` (state res v2, v2.1) a key is unconflicted only
    if every map holds it with the same value; otherwise (v1) a key is
    conflicted only when two maps disagree on its value.

    Returns ``(unconflicted, conflicted)``, the latter mapping each conflicted
    key to its distinct event IDs in first-seen order.
    """
    if not state_sets:
        return {}, {}
    first = state_sets[0]
    rest = state_sets[1:]
    unconflicted: dict[Hashable, str] = {}
    conflicted: dict[Hashable, list[str]] = {}
    seen: set[Hashable] = set()
    for key, value in first.items():
        seen.add(key)
        values = [value]
        same = True
        for other in rest:
            v = other.get(key)
            if v is None:
                if missing_is_conflict:
                    same = False
                continue
            if v != value:
                same = False
                if v not in values:
                    values.append(v)
        if same:
            unconflicted[key] = value
        else:
            conflicted[key] = values
    for index, state in enumerate(rest):
        for key, value in state.items():
            if key in seen:
                continue
            seen.add(key)
            values = [value]
            same = not missing_is_conflict
            for other in rest[index + 1 :]:
                v = other.get(key)
                if v is not None and v != value:
                    same = False
                    if v not in values:
                        values.append(v)
            if same:
                unconflicted[key] = value
            else:
                conflicted[key] = values
    return unconflicted, conflicted


class StateSet:
    """An interned state map (immutable): key index -> event index. Made by
    :meth:`Graph.intern_state`."""

    __slots__ = ("_map", "_source")

    def __init__(self, mapping: dict[int, int], source: dict[Hashable, str] | None = None) -> None:
        self._map = mapping
        self._source = source  # a private copy of the dict it was interned from

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: int) -> int | None:
        """The event index at a key index, or None."""
        return self._map.get(key)

    def items(self) -> list[tuple[int, int]]:
        """(key index, event index) pairs sorted by key."""
        return sorted(self._map.items())


def separate_interned(
    state_sets: Sequence[StateSet], missing_is_conflict: bool
) -> tuple[StateSet, dict[int, list[int]]]:
    """:func:`separate` over interned state sets; returns the unconflicted
    state as a StateSet and the conflicted set keyed by key index."""
    for s in state_sets:
        if not isinstance(s, StateSet):
            raise TypeError("expected StateSet objects")
    maps = [s._map for s in state_sets]
    unconflicted, conflicted = separate(maps, missing_is_conflict)
    return StateSet(unconflicted), conflicted  # type: ignore[arg-type]


class Graph:
    """The interned auth DAG of one room (see the module docstring)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.key_index: dict[Hashable, int] = {}
        self.keys: list[Hashable] = []
        self._ids: list[str] = []
        self._auth: list[tuple[int, ...]] = []
        self._ts: list[int] = []
        self._power: list[int] = []
        self._flags: list[int] = []
        self._key: list[int] = []
        self._pl_auth: list[int] = []
        self._auth_keys: list[tuple[int, ...]] = []
        self._python_checks = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add_key(self, key: Hashable) -> int:
        """Intern a ``(type, state_key)`` pair; return its key index."""
        k = self.key_index.get(key)
        if k is None:
            k = len(self.keys)
            self.key_index[key] = k
            self.keys.append(key)
        return k

    def add_event(
        self,
        event_id: str,
        auth: Sequence[int],
        ts: int,
        power: int,
        flags: int,
        key: int,
        pl_auth: int,
        auth_keys: Sequence[int],
    ) -> int:
        """Intern one event whose auth events are already interned.

        Args:
            event_id: the event ID (also the last tie-break of both orderings).
            auth: indices of its auth events present in the room graph.
            ts: ``origin_server_ts``, clamped to a signed 64-bit integer.
            power: the sender's power level according to the auth events.
            flags: ``FLAG_*`` bits.
            key: its key index (state events), else -1.
            pl_auth: index of the first ``m.room.power_levels`` auth event, or -1.
            auth_keys: key indices of the state the auth rules may consult.

        Returns:
            The new event index.
        """
        if event_id in self.index:
            raise ValueError("event already interned: %r" % (event_id,))
        n = len(self._ids)
        for a in auth:
            if not 0 <= a < n:
                raise ValueError("auth event index out of range")
        if not -1 <= pl_auth < n or not -1 <= key < len(self.keys):
            raise ValueError("index out of range")
        for k in auth_keys:
            if not 0 <= k < len(self.keys):
                raise ValueError("key index out of range")
        self.index[event_id] = n
        self._ids.append(event_id)
        self._auth.append(tuple(auth))
        self._ts.append(int(ts))
        self._power.append(int(power))
        self._flags.append(int(flags))
        self._key.append(int(key))
        self._pl_auth.append(int(pl_auth))
        self._auth_keys.append(tuple(auth_keys))
        return n

    def set_room_config(
        self,
        infinite_creators: bool,
        limit_notifications: bool,
        knock_join_rule: bool,
        restricted_join_rule: bool,
        knock_restricted_join_rule: bool,
        create_key: int,
        power_levels_key: int,
        join_rules_key: int,
        named_defaults: Sequence[int],
        no_power_levels_creator_level: int,
    ) -> None:
        """Room-wide settings of the C kernel's fast authorization path.
        The pure kernel asks the Python rules for every decision, so it only
        validates them."""
        for k in (create_key, power_levels_key, join_rules_key):
            if not -1 <= k < len(self.keys):
                raise ValueError("key index out of range")
        if len(named_defaults) != 7:
            raise ValueError("expected 7 named defaults")

    def set_auth_info(
        self,
        idx: int,
        kind: int,
        code: int,
        type_id: int,
        sender_id: int,
        sender_domain: int,
        room_key: int,
        sender_member_key: int,
        target_id: int,
        target_domain: int,
        target_member_key: int,
        rule9: bool,
        power_levels_table: Any,
        create_info: Any,
    ) -> None:
        """Pre-parsed authorization data for one event (used by the C
        kernel's fast path; see ``homeserver.state._auth.set_auth_info``).
        The pure kernel validates and ignores it."""
        if not 0 <= idx < len(self._ids):
            raise IndexError("event index out of range")
        if kind not in (0, 1, 2, 3) or not 0 <= code <= 127 or (kind == 2 and power_levels_table is None):
            raise ValueError("bad kind or code")

    def auth_stats(self) -> tuple[int, int]:
        """(decisions taken by a fast path, decisions asked of the Python
        rules): the pure kernel always asks Python."""
        return 0, self._python_checks

    def event_id(self, idx: int) -> str:
        """The event ID of an interned event."""
        return self._ids[idx]

    def event_key(self, idx: int) -> int:
        """The key index of an interned event (-1 for non-state events)."""
        return self._key[idx]

    def flags(self, idx: int) -> int:
        """The ``FLAG_*`` bits of an interned event."""
        return self._flags[idx]

    def set_rejected(self, idx: int, rejected: bool) -> None:
        """Mark or unmark an interned event as rejected."""
        if rejected:
            self._flags[idx] |= FLAG_REJECTED
        else:
            self._flags[idx] &= ~FLAG_REJECTED

    def intern_state(self, mapping: Mapping[Hashable, str]) -> StateSet:
        """Intern a ``(type, state_key) -> event_id`` map whose events are
        all interned (KeyError otherwise)."""
        index = self.index
        result = {}
        for key, event_id in mapping.items():
            if event_id not in index:
                raise KeyError("event not interned: %r" % (event_id,))
            result[self.add_key(key)] = index[event_id]
        return StateSet(result, dict(mapping) if type(mapping) is dict else None)

    def state_to_dict(self, state: StateSet, like: StateSet | None = None) -> dict[Hashable, str]:
        """A StateSet as a ``(type, state_key) -> event_id`` dict. With
        ``like``, a StateSet interned from a dict, copy that dict and patch
        the differences (faster for similar states)."""
        if not isinstance(state, StateSet) or not (like is None or isinstance(like, StateSet)):
            raise TypeError("expected a StateSet")
        keys, ids = self.keys, self._ids
        if like is not None and like._source is not None:
            result = dict(like._source)
            mine, theirs = state._map, like._map
            for k, e in theirs.items():
                if k not in mine:
                    del result[keys[k]]
            for k, e in mine.items():
                if theirs.get(k) != e:
                    result[keys[k]] = ids[e]
            return result
        return {keys[k]: ids[e] for k, e in state._map.items()}

    def merge_state(self, base: StateSet, overlay: dict[int, int]) -> StateSet:
        """``base`` plus the ``overlay`` entries whose keys base lacks."""
        if not isinstance(base, StateSet):
            raise TypeError("expected a StateSet")
        merged = dict(base._map)
        for k, e in overlay.items():
            if not (0 <= k < len(self.keys) and 0 <= e < len(self._ids)):
                raise IndexError("overlay index out of range")
            merged.setdefault(k, e)
        return StateSet(merged)

    def lookup(self, event_ids: Sequence[str]) -> list[int]:
        """Indices of the given event IDs, skipping those not interned."""
        index = self.index
        return [index[e] for e in event_ids if e in index]

    def _chain_from(self, starts: Sequence[int], stop: set[int] | None) -> set[int]:
        """Events reachable from ``starts`` over auth edges, starts included,
        not entering (nor expanding) events in ``stop``."""
        auth = self._auth
        seen: set[int] = set()
        stack = [s for s in starts if stop is None or s not in stop]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            for a in auth[x]:
                if a not in seen and (stop is None or a not in stop):
                    stack.append(a)
        return seen

    def auth_difference(
        self, common: Sequence[int], per_set: Sequence[Sequence[int]]
    ) -> list[int]:
        """The auth difference of state sets, as indices in ascending order.

        Each state set is ``common`` (the unconflicted events, held by every
        set) plus its own ``per_set[i]``. As in Synapse, the auth chain of a
        set includes the set's own events. Events in the chain of ``common``
        are in every chain, so they are never part of the difference.
        """
        if len(per_set) < 2:
            return []
        if isinstance(common, StateSet):
            common = list(common._map.values())
        common_chain = self._chain_from(common, None)
        chains = [self._chain_from(s, common_chain) for s in per_set]
        union = set().union(*chains)
        inter = set(chains[0]).intersection(*chains[1:])
        return sorted(union - inter)

    def conflicted_subgraph(self, conflicted: Sequence[int]) -> list[int]:
        """Events on an auth path between two conflicted events (endpoints
        included), as indices in ascending order (MSC4297, room v12)."""
        conflicted_set = set(conflicted)
        down = self._chain_from(conflicted, None)
        auth = self._auth
        up: set[int] = set()
        for x in sorted(down):
            if x in conflicted_set or any(a in up for a in auth[x]):
                up.add(x)
        return sorted(up)

    def power_sort(self, full_conflicted: Sequence[int]) -> list[int]:
        """The power events of the full conflicted set plus the events of
        their auth chains inside that set, in reverse topological power order.

        As in Synapse, the auth chains are walked only through events of the
        full conflicted set. Ties: higher sender power first, then lower
        ``origin_server_ts``, then lower event ID.
        """
        full = set(full_conflicted)
        auth = self._auth
        flags = self._flags
        graph: dict[int, set[int]] = {}
        for p in full:
            if not flags[p] & FLAG_POWER or p in graph:
                continue
            stack = [p]
            while stack:
                x = stack.pop()
                edges = graph.setdefault(x, set())
                for a in auth[x]:
                    if a in full:
                        if a not in graph:
                            stack.append(a)
                        edges.add(a)
        ids, ts, power = self._ids, self._ts, self._power
        reverse: dict[int, list[int]] = {x: [] for x in graph}
        outdegree: dict[int, int] = {}
        heap = []
        for x, edges in graph.items():
            outdegree[x] = len(edges)
            if not edges:
                heap.append((-power[x], ts[x], ids[x], x))
            for a in edges:
                reverse[a].append(x)
        heapq.heapify(heap)
        result = []
        while heap:
            x = heapq.heappop(heap)[3]
            result.append(x)
            for parent in reverse[x]:
                outdegree[parent] -= 1
                if outdegree[parent] == 0:
                    heapq.heappush(
                        heap, (-power[parent], ts[parent], ids[parent], parent)
                    )
        return result

    def mainline_sort(self, events: Sequence[int], power_levels: int) -> list[int]:
        """Sort events by mainline ordering based on the power levels event
        ``power_levels`` (-1 if the resolved state has none).

        Mainline positions count up from the oldest power levels event (1) to
        ``power_levels``; an event whose power levels chain never meets the
        mainline gets 0 (the spec's infinite position). Ascending
        (position, ``origin_server_ts``, event ID).
        """
        pl_auth = self._pl_auth
        mainline = []
        pl = power_levels
        seen: set[int] = set()
        while pl >= 0 and pl not in seen:
            seen.add(pl)
            mainline.append(pl)
            pl = pl_auth[pl]
        position = {e: i + 1 for i, e in enumerate(reversed(mainline))}
        ids, ts = self._ids, self._ts

        def depth(e: int) -> int:
            walked: set[int] = set()
            while e >= 0 and e not in walked:
                d = position.get(e)
                if d is not None:
                    return d
                walked.add(e)
                e = pl_auth[e]
            return 0

        return sorted(events, key=lambda e: (depth(e), ts[e], ids[e]))

    def iterative_auth(
        self,
        order: Sequence[int],
        base: StateSet,
        overlay: dict[int, int],
        check: Callable[[int, list[int]], bool],
    ) -> None:
        """Apply the iterative auth checks to ``order``.

        The current state is ``overlay`` (key index -> event index) on top of
        ``base`` (string-keyed, typically the unconflicted state map).
        ``overlay`` is updated in place. For each event the auth events are its
        own non-rejected auth events, overridden by the non-rejected current
        state for the keys the auth rules consult; ``check(event, auth)``
        decides. Rejected events are never admitted (as Synapse does).
        """
        auth, flags, key_of = self._auth, self._flags, self._key
        auth_keys = self._auth_keys
        if not isinstance(base, StateSet):
            raise TypeError("expected a StateSet")
        base_map = base._map
        for e in order:
            chosen: dict[int, int] = {}
            for a in auth[e]:
                if not flags[a] & FLAG_REJECTED and key_of[a] >= 0:
                    chosen[key_of[a]] = a
            for k in auth_keys[e]:
                cur = overlay.get(k)
                if cur is None:
                    cur = base_map.get(k)
                if cur is not None and not flags[cur] & FLAG_REJECTED:
                    chosen[k] = cur
            if flags[e] & FLAG_REJECTED or key_of[e] < 0:
                continue
            self._python_checks += 1
            if check(e, list(chosen.values())):
                overlay[key_of[e]] = e
