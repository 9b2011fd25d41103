"""Run Synapse's state resolution on benchmark inputs (for bench_stateres.py).

Runs under the Python of a SEPARATE virtualenv holding matrix-synapse (never
Estuary's); it imports nothing of Estuary. Reads a JSON job from argv[1] and
writes results to argv[2]:

    job = {"room_version": "11", "room_id": "!...", "pdus": [...],
           "rejected": [event_id, ...], "repeat": 3,
           "scenarios": [{"name": ..., "base": [event_id, ...],
                          "forks": [{"add": [event_id, ...], "remove": [[type, state_key], ...]}]}]}

Room version 1 uses ``synapse.state.v1.resolve_events_with_store``, fed by the
same store's ``get_events``. Each fork's state set is the base state (keys from the events) with "remove"
keys dropped and "add" events set. Synapse's resolver
(``synapse.state.v2.resolve_events_with_store``) is driven through its store
protocol by an in-memory store: ``get_events`` is a dict lookup and
``get_auth_chain_difference`` computes the difference (and, for room v12, the
conflicted subgraph) by walking auth chains in Python, as Synapse's own test
store does; its time is reported separately ("store_ms") because production
Synapse answers it from its SQL chain cover index instead.
"""

import json
import sys
import time

import synapse.event_auth  # noqa: F401  (import first: avoids a circular import in synapse.state)
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.events import make_event_from_dict
from synapse.api.room_versions import StateResolutionVersions
from synapse.state import v1, v2
from synapse.storage.databases.main.event_federation import StateDifference


class Clock:
    async def sleep(self, duration):
        return None


class Store:
    def __init__(self, events):
        self.events = events
        self.store_seconds = 0.0

    async def get_events(self, event_ids, allow_rejected=False):
        events = self.events
        return {e: events[e] for e in event_ids if e in events}

    def _chain(self, start):
        events = self.events
        seen = set()
        stack = list(start)
        while stack:
            e = stack.pop()
            if e in seen:
                continue
            seen.add(e)
            ev = events.get(e)
            if ev is not None:
                stack.extend(ev.auth_event_ids())
        return seen

    async def get_auth_chain_difference(self, room_id, state_sets, conflicted_state=None,
                                        additional_backwards_reachable_conflicted_events=None):
        t0 = time.perf_counter()
        chains = [self._chain(s) for s in state_sets]
        union = set().union(*chains)
        common = set(chains[0]).intersection(*chains[1:])
        subgraph = None
        if conflicted_state is not None:
            conflicted = set(conflicted_state) | set(additional_backwards_reachable_conflicted_events or ())
            down = self._chain(conflicted)
            children = {}
            for e in down:
                for a in self.events[e].auth_event_ids():
                    children.setdefault(a, []).append(e)
            # up: events of `down` from which a conflicted event is reachable
            up = set()
            stack = [e for e in conflicted if e in down]
            while stack:
                e = stack.pop()
                if e in up:
                    continue
                up.add(e)
                stack.extend(c for c in children.get(e, ()) if c in down)
            subgraph = down & up
        self.store_seconds += time.perf_counter() - t0
        return StateDifference(auth_difference=union - common, conflicted_subgraph=subgraph)


def run_coroutine(coro):
    """Drive a coroutine that never really suspends (our store and clock
    complete immediately)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the resolver suspended on a real awaitable")


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    room_version = KNOWN_ROOM_VERSIONS[job["room_version"]]
    rejected = set(job.get("rejected", ()))
    events = {}
    ids_in_pdu = room_version.event_format == 1  # rooms v1/v2 carry their IDs
    for pdu in job["pdus"]:
        expected_id = pdu["event_id"]
        if not ids_in_pdu:
            pdu = {k: v for k, v in pdu.items() if k != "event_id"}
        ev = make_event_from_dict(
            pdu, room_version, rejected_reason="rejected" if expected_id in rejected else None
        )
        if ev.event_id != expected_id:
            raise SystemExit("event ID mismatch: Synapse computed %s, Estuary %s" % (ev.event_id, expected_id))
        events[expected_id] = ev
    out = {}
    for sc in job["scenarios"]:
        base = {}
        for e in sc["base"]:
            ev = events[e]
            base[(ev.type, ev.state_key)] = e
        state_sets = []
        for fork in sc["forks"]:
            s = dict(base)
            for t, k in fork["remove"]:
                s.pop((t, k), None)
            for e in fork["add"]:
                ev = events[e]
                s[(ev.type, ev.state_key)] = e
            state_sets.append(s)
        timings, store_timings, result = [], [], None
        for _ in range(job.get("repeat", 3)):
            store = Store(events)
            t0 = time.perf_counter()
            if room_version.state_res == StateResolutionVersions.V1:
                result = run_coroutine(v1.resolve_events_with_store(
                    job["room_id"], room_version, state_sets, {}, store.get_events))
            else:
                result = run_coroutine(v2.resolve_events_with_store(
                    Clock(), job["room_id"], room_version, state_sets, {}, store))
            timings.append((time.perf_counter() - t0) * 1000)
            store_timings.append(store.store_seconds * 1000)
        out[sc["name"]] = {
            "result": sorted([t, k, e] for (t, k), e in result.items()),
            "ms": timings,
            "store_ms": store_timings,
        }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
