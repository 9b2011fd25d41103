"""State resolution: the room state before an event, from the states after its
``prev_events`` (spec rooms/v1.md, rooms/fragments/v2-state-res.md,
rooms/v12.md).

Public API:

- :func:`resolve_state` — pure function over plain data.
- :class:`RoomGraph` — a room's events interned once for many resolutions:
  ``graph = RoomGraph(room_version)``; ``graph.resolve(state_sets, event_map)``
  takes dicts or ``StateSet`` objects from ``graph.intern_state(state,
  event_map)`` (cache those, e.g. per state group, so large state maps are not
  converted on every resolution); ``graph.resolve_interned`` returns a
  ``StateSet``; ``graph.mark_rejected(event_ids)`` records rejections.
- :data:`IMPLEMENTATION` — ``"c"`` or ``"python"``, the kernel live in this
  process (``ESTUARY_PURE_STATERES=1`` forces Python);
  :func:`log_implementation` logs it (call it at process start-up).

Design: ``interning.RoomGraph`` turns each event, once, into integers (auth
edges, sender power for the ordering, flags, keys the auth rules read, parsed
power level tables). The algorithm (``v2.py``, ``v1.py``) is written once on a
small kernel surface implemented twice, in C (``_speedups.c``, kernels run
without the GIL) and in Python (``_pure.py``): separation, auth difference,
conflicted subgraph, power ordering (Kahn + heap), mainline ordering and the
iterative auth checks. The C kernel decides the authorization rules itself for
ordinary state, power levels and most membership events and calls the core
Python rules (``homeserver.core.auth``) for the rest; the pure kernel always
calls them. Tests prove both kernels agree on generated DAGs.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from homeserver.state._kernel import IMPLEMENTATION, log_implementation
from homeserver.state.interning import RoomGraph as _RoomGraph
from homeserver.state.v1 import resolve_v1
from homeserver.state.v2 import resolve_v2

__all__ = ["IMPLEMENTATION", "RoomGraph", "log_implementation", "resolve_state"]


def _state_res_name(room_version: Any) -> str:
    state_res = room_version.state_res
    return getattr(state_res, "name", str(state_res))


class RoomGraph(_RoomGraph):
    """A room's events interned for state resolution; reuse it across
    resolutions in the same room so events are converted only once."""

    def resolve(
        self,
        state_sets: Sequence[Mapping[tuple[str, str], str] | Any],
        event_map: Mapping[str, Any] | None = None,
    ) -> dict[tuple[str, str], str]:
        """Resolve ``state_sets`` (mappings, or ``StateSet`` objects from
        :meth:`intern_state`). ``event_map`` must hold every event of the
        mappings and their auth chains not interned yet (it may hold more)."""
        sets = [s if isinstance(s, self.kernel.StateSet) else self.intern_state(s, event_map) for s in state_sets]
        resolved = self.resolve_interned(sets)
        return self.graph.state_to_dict(resolved, like=sets[0] if sets else None)

    def resolve_interned(
        self,
        state_sets: Sequence[Mapping[tuple[str, str], str] | Any],
        event_map: Mapping[str, Any] | None = None,
    ) -> Any:
        """As :meth:`resolve`, returning the resolved state as a ``StateSet``
        (convert with ``graph.state_to_dict``; cache it for later
        resolutions)."""
        sets = [s if isinstance(s, self.kernel.StateSet) else self.intern_state(s, event_map) for s in state_sets]
        if not sets:
            return self.empty_state
        name = _state_res_name(self.room_version)
        if name == "V1":
            dicts = [self.graph.state_to_dict(s) for s in sets]
            events = _EventLookup(self, event_map if event_map is not None else {})
            return self.intern_state(resolve_v1(self.room_version, dicts, events))
        return resolve_v2(self, sets, v2_1=(name == "V2_1"))


class _EventLookup(Mapping[str, Any]):
    """Events by ID: the interned ones, then ``event_map``."""

    def __init__(self, graph: _RoomGraph, event_map: Mapping[str, Any]) -> None:
        self._graph = graph
        self._map = event_map

    def __getitem__(self, event_id: str) -> Any:
        idx = self._graph.index_of(event_id)
        if idx is not None:
            return self._graph.event(idx)
        return self._map[event_id]

    def __contains__(self, event_id: object) -> bool:
        return (isinstance(event_id, str) and self._graph.index_of(event_id) is not None) or event_id in self._map

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


def resolve_state(
    room_version: Any,
    state_sets: Sequence[Mapping[tuple[str, str], str]],
    event_map: Mapping[str, Any],
    *,
    rejected_event_ids: Collection[str] = (),
    kernel: Any = None,
) -> dict[tuple[str, str], str]:
    """Resolve the state sets of a room (the states after each ``prev_event``).

    Args:
        room_version: the room's ``RoomVersion``.
        state_sets: ``(type, state_key) -> event_id`` maps to resolve.
        event_map: every event of the state sets and of their auth chains.
        rejected_event_ids: events known to be rejected (in addition to events
            whose ``rejected_reason`` attribute is set, if they have one).
            State res v2/v2.1 never admit them nor authorise with them; the
            v1 algorithm ignores rejection, as Synapse's does.
        kernel: force a kernel module (tests); default the live one.

    Returns:
        The resolved ``(type, state_key) -> event_id`` map.
    """
    if not state_sets:
        return {}
    if _state_res_name(room_version) == "V1":
        return resolve_v1(room_version, state_sets, event_map)
    graph = RoomGraph(room_version, kernel=kernel)
    graph.mark_rejected(rejected_event_ids)
    return graph.resolve(state_sets, event_map)
