"""State resolution v2 (room versions 2-11) and v2.1 (room version 12).

Spec: rooms/fragments/v2-state-res.md and rooms/v12.md "State resolution"
(MSC4297: the power events pass starts from an empty state, and the full
conflicted set also holds the conflicted state subgraph). The steps are written
once here on top of the kernel surface (``_pure.Graph`` / ``_speedups.Graph``).

Deviations from the spec text, to converge with Synapse (the federation's
reference behaviour), each noted where it happens:

- the create event is a power event (``interning.is_power_event``);
- the auth chain of a state set used for the auth difference includes the set's
  own events (Synapse's ``get_auth_chain_difference``);
- the power events' auth chains are followed only through events of the full
  conflicted set (Synapse's ``_add_event_and_auth_chain_to_graph``);
- previously rejected events are never admitted during the iterative auth
  checks (Synapse's ``_iterative_auth_checks``; spec "Rejected events" would
  re-auth events rejected for state reasons). Rejected auth events are never
  used for authorisation, as the spec says.
"""

from __future__ import annotations

from typing import Any, Sequence

from homeserver.state._auth import make_checker
from homeserver.state.interning import POWER_LEVELS, RoomGraph


def resolve_v2(room_graph: RoomGraph, state_sets: Sequence[Any], v2_1: bool) -> Any:
    """Resolve interned state sets (kernel ``StateSet`` objects made by
    :meth:`RoomGraph.intern_state`) with state res v2, or v2.1 if ``v2_1``.
    Returns the resolved state as a ``StateSet``."""
    kernel = room_graph.kernel
    graph = room_graph.graph
    unconflicted, conflicted = kernel.separate_interned(state_sets, True)
    if not conflicted:
        return unconflicted

    conflicted_idx = [e for values in conflicted.values() for e in values]
    per_set = []
    for s in state_sets:
        events = []
        for k in conflicted:
            e = s.get(k)
            if e is not None:
                events.append(e)
        per_set.append(events)

    # Auth difference (Synapse semantics: chains include the sets' own events).
    full = set(conflicted_idx)
    full.update(graph.auth_difference(unconflicted, per_set))
    if v2_1:
        full.update(graph.conflicted_subgraph(conflicted_idx))
    full_list = sorted(full)

    check = make_checker(room_graph)
    # Step 1: power events and their auth chains within the full conflicted set.
    power_sorted = graph.power_sort(full_list)
    # Step 2: iterative auth checks from the unconflicted state (v2) or from
    # the empty state (v2.1: MSC4297).
    base = room_graph.empty_state if v2_1 else unconflicted
    overlay: dict[int, int] = {}
    graph.iterative_auth(power_sorted, base, overlay, check)

    # Step 3: the other events, by mainline ordering on the partially resolved
    # power levels.
    pl_key = graph.key_index.get((POWER_LEVELS, ""))
    pl_idx = -1
    if pl_key is not None:
        found = overlay.get(pl_key)
        if found is None:
            found = base.get(pl_key)
        if found is not None:
            pl_idx = found
    in_power = set(power_sorted)
    leftover = [x for x in full_list if x not in in_power]
    ordered = graph.mainline_sort(leftover, pl_idx)
    # Step 4.
    graph.iterative_auth(ordered, base, overlay, check)

    # Step 5: the unconflicted state map always wins.
    return graph.merge_state(unconflicted, overlay)
