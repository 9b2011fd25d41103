"""Test mixins run against both kernels (``test_python_impl`` and
``test_c_impl`` bind ``kernel``), as CPython's heapq tests do."""

from __future__ import annotations

import itertools
from typing import Any

from homeserver.state import RoomGraph, resolve_state
from tests.unit.state import _fixtures


class ScenarioTestsMixin:
    """Canonical scenarios from ``fixtures/*.json``."""

    kernel: Any = None

    def _check_fixture(self, name: str) -> None:
        raw = _fixtures.load_raw(name)
        for version in raw["room_versions"]:
            scenario = _fixtures.load(name, version)
            got = resolve_state(
                scenario.room_version,
                scenario.state_sets,
                scenario.event_map,
                rejected_event_ids=scenario.rejected,
                kernel=self.kernel,
            )
            readable = lambda m: {k: scenario.name_of(v) for k, v in m.items()}  # noqa: E731
            self.assertEqual(
                readable(got), readable(scenario.expected), "%s in room v%s" % (name, version)
            )
            # The answer does not depend on the order of the state sets.
            for perm in itertools.permutations(scenario.state_sets):
                again = resolve_state(
                    scenario.room_version,
                    list(perm),
                    scenario.event_map,
                    rejected_event_ids=scenario.rejected,
                    kernel=self.kernel,
                )
                self.assertEqual(again, got)

    def test_ban_vs_power_levels(self) -> None:
        """A ban by a higher-power sender beats a concurrent power levels
        change by the banned user."""
        self._check_fixture("ban_vs_power_levels")

    def test_topic_reset(self) -> None:
        """A banned user's concurrent topic does not reset the topic."""
        self._check_fixture("topic_reset")

    def test_join_rule_evasion(self) -> None:
        """A join racing an invite-only switch is rejected."""
        self._check_fixture("join_rule_evasion")

    def test_offtopic_power_levels(self) -> None:
        """An unrelated power levels change cannot undo a concurrent
        promotion by a more powerful user."""
        self._check_fixture("offtopic_power_levels")

    def test_mainline_ordering(self) -> None:
        """Non-power events are ordered by mainline position before
        origin_server_ts."""
        self._check_fixture("mainline_ordering")

    def test_rejected_in_fork(self) -> None:
        """A rejected event in a fork is neither admitted nor used to
        authorise the events citing it."""
        self._check_fixture("rejected_in_fork")

    def test_rejected_in_fork_control(self) -> None:
        """Without the rejection, the same fork wins (the previous test
        really exercises rejection)."""
        self._check_fixture("rejected_in_fork_control")

    def test_v12_replay_conflicted_subgraph(self) -> None:
        """Room v12: events between conflicted events are replayed
        (MSC4297 conflicted state subgraph), preventing a state reset."""
        self._check_fixture("v12_replay_conflicted_subgraph")

    def test_v12_start_from_empty_state(self) -> None:
        """Room v12 starts the power events pass from the empty state and
        keeps the join rules that room v11 resets to missing."""
        self._check_fixture("v12_start_from_empty_state")

    def test_v1_depth_order(self) -> None:
        """Room v1: power levels, join rules, memberships, then other
        conflicts, each by depth and sha1(event_id)."""
        self._check_fixture("v1_depth_order")

    def test_no_conflict(self) -> None:
        """Without conflicts the result is the union of the state sets."""
        s = _fixtures.load("topic_reset", "10")
        first = s.state_sets[0]
        self.assertEqual(
            resolve_state(s.room_version, [first, dict(first)], s.event_map, kernel=self.kernel),
            first,
        )
        self.assertEqual(resolve_state(s.room_version, [], s.event_map, kernel=self.kernel), {})

    def test_unknown_events(self) -> None:
        """Events missing from the event map stay if unconflicted and are
        never admitted if conflicted (as Synapse drops them)."""
        s = _fixtures.load("topic_reset", "10")
        a, b = (dict(x) for x in s.state_sets)
        a[("m.room.name", "")] = "$unknown-shared"
        b[("m.room.name", "")] = "$unknown-shared"
        a[("m.room.avatar", "")] = "$unknown-a"
        b[("m.room.avatar", "")] = "$unknown-b"
        got = resolve_state(s.room_version, [a, b], s.event_map, rejected_event_ids=s.rejected, kernel=self.kernel)
        want = dict(s.expected)
        want[("m.room.name", "")] = "$unknown-shared"
        self.assertEqual(got, want)

    def test_room_graph_reuse(self) -> None:
        """A RoomGraph interns events once and gives the same answers when
        reused across resolutions of the same room."""
        s = _fixtures.load("mainline_ordering", "11")
        graph = RoomGraph(s.room_version, kernel=self.kernel)
        first = graph.resolve(s.state_sets, s.event_map)
        interned = len(graph)
        second = graph.resolve(list(reversed(s.state_sets)), {})
        self.assertEqual(first, second)
        self.assertEqual(len(graph), interned)
        self.assertEqual(first, s.expected)


def _graph(kernel: Any, spec: list[tuple[str, list[int], int, int, int]]) -> Any:
    """A kernel Graph from ``(event_id, auth, ts, power, flags)`` rows."""
    g = kernel.Graph()
    key = g.add_key(("k", ""))
    for event_id, auth, ts, power, flags in spec:
        pl_auth = -1
        for a in auth:
            if g.flags(a) & kernel.FLAG_POWER_LEVELS:
                pl_auth = a
                break
        g.add_event(event_id, auth, ts, power, flags | kernel.FLAG_STATE, key, pl_auth, [key])
    return g


class KernelTestsMixin:
    """Direct tests of the kernel surface."""

    kernel: Any = None

    def test_power_sort_tie_breaks(self) -> None:
        """Among available events: higher power, then lower ts, then lower
        event ID; and an auth event always precedes its dependants."""
        k = self.kernel
        P = k.FLAG_POWER
        g = _graph(k, [
            ("$root", [], 0, 0, P),
            ("$b", [0], 5, 50, P),
            ("$a", [0], 5, 50, P),
            ("$c", [0], 1, 50, P),
            ("$d", [0], 0, 100, P),
            ("$e", [4], 9, 0, P),
        ])
        self.assertEqual(
            [g.event_id(i) for i in g.power_sort(range(6))],
            ["$root", "$d", "$c", "$a", "$b", "$e"],
        )

    def test_power_sort_walks_only_full_set(self) -> None:
        """Only power events and their auth chains inside the full set are
        sorted; non-power events outside any power event's chain are not."""
        k = self.kernel
        P = k.FLAG_POWER
        g = _graph(k, [("$x", [], 0, 0, 0), ("$y", [0], 0, 0, P), ("$z", [1], 0, 0, 0)])
        self.assertEqual(g.power_sort([0, 1, 2]), [0, 1])
        self.assertEqual(g.power_sort([1, 2]), [1])

    def test_mainline_sort(self) -> None:
        """Events are ordered by the position of their power levels chain on
        the mainline, then ts, then event ID; off-mainline ones come first."""
        k = self.kernel
        PL = k.FLAG_POWER_LEVELS | k.FLAG_POWER
        g = _graph(k, [
            ("$p1", [], 0, 0, PL),
            ("$p2", [0], 0, 0, PL),
            ("$p3", [1], 0, 0, PL),
            ("$late", [0], 99, 0, 0),
            ("$early", [2], 1, 0, 0),
            ("$none", [], 50, 0, 0),
            ("$side", [1], 7, 0, 0),
        ])
        order = g.mainline_sort([3, 4, 5, 6], 2)
        self.assertEqual([g.event_id(i) for i in order], ["$none", "$late", "$side", "$early"])

    def test_auth_difference(self) -> None:
        """Events in some but not all chains (chains include the sets' own
        events); the chain of common events is excluded."""
        k = self.kernel
        g = _graph(k, [
            ("$c", [], 0, 0, 0),
            ("$u", [0], 0, 0, 0),
            ("$a1", [0], 0, 0, 0),
            ("$a2", [2], 0, 0, 0),
            ("$b1", [0], 0, 0, 0),
            ("$both", [2, 4], 0, 0, 0),
        ])
        self.assertEqual(g.auth_difference([1], [[3], [4]]), [2, 3, 4])
        self.assertEqual(g.auth_difference([1], [[5], [3]]), [3, 4, 5])
        self.assertEqual(g.auth_difference([1], [[3]]), [])

    def test_conflicted_subgraph(self) -> None:
        """Events on auth paths between conflicted events, endpoints
        included; neither older nor unrelated events."""
        k = self.kernel
        g = _graph(k, [
            ("$create", [], 0, 0, 0),
            ("$old", [0], 0, 0, 0),
            ("$mid", [1], 0, 0, 0),
            ("$new", [2], 0, 0, 0),
            ("$other", [0], 0, 0, 0),
        ])
        self.assertEqual(g.conflicted_subgraph([1, 3]), [1, 2, 3])
        self.assertEqual(g.conflicted_subgraph([3, 4]), [3, 4])

    def test_separate(self) -> None:
        """Unconflicted keys agree everywhere; with missing_is_conflict a
        key absent from one set is conflicted."""
        sep = self.kernel.separate
        s1 = {"a": "1", "b": "2", "c": "3"}
        s2 = {"a": "1", "b": "9", "d": "4"}
        self.assertEqual(sep([s1, s2], True), ({"a": "1"}, {"b": ["2", "9"], "c": ["3"], "d": ["4"]}))
        self.assertEqual(sep([s1, s2], False), ({"a": "1", "c": "3", "d": "4"}, {"b": ["2", "9"]}))
        self.assertEqual(sep([], True), ({}, {}))

    def test_state_sets(self) -> None:
        """Interned state sets round-trip, separate like dicts, and merge
        with the base winning on shared keys."""
        k = self.kernel
        g = _graph(k, [("$a", [], 0, 0, 0), ("$b", [], 0, 0, 0), ("$c", [], 0, 0, 0)])
        d1 = {("t", "1"): "$a", ("t", "2"): "$b"}
        d2 = {("t", "1"): "$a", ("t", "2"): "$c", ("t", "3"): "$c"}
        s1, s2 = g.intern_state(d1), g.intern_state(d2)
        self.assertEqual(g.state_to_dict(s1), d1)
        self.assertEqual(len(s2), 3)
        self.assertEqual(s2.get(g.key_index[("t", "3")]), 2)
        self.assertIsNone(s1.get(g.key_index[("t", "3")]))
        for missing in (True, False):
            unconflicted, conflicted = k.separate_interned([s1, s2], missing)
            want_u, want_c = k.separate([d1, d2], missing)
            self.assertEqual(g.state_to_dict(unconflicted), want_u)
            self.assertEqual(
                {g.keys[key]: [g.event_id(e) for e in evs] for key, evs in conflicted.items()}, want_c
            )
        merged = g.merge_state(s1, {g.key_index[("t", "2")]: 2, g.key_index[("t", "3")]: 0})
        self.assertEqual(g.state_to_dict(merged), {**d1, ("t", "3"): "$a"})
        self.assertEqual(merged.items(), sorted(merged.items()))
        # Copy-and-patch conversion gives the same dict as a fresh one.
        self.assertEqual(g.state_to_dict(merged, like=s2), g.state_to_dict(merged))
        self.assertEqual(g.state_to_dict(s1, like=s2), d1)
        self.assertEqual(g.state_to_dict(s2, like=merged), d2)
        self.assertRaises(KeyError, g.intern_state, {("t", "1"): "$nope"})

    def test_separate_large_sets(self) -> None:
        """Large, mostly identical state sets (long identical runs, a few
        changed, missing and extra keys) separate exactly like dicts."""
        import random

        k = self.kernel
        rnd = random.Random(4)
        g = k.Graph()
        for i in range(40):
            g.add_event("$e%d" % i, [], 0, 0, 0, -1, -1, [])
        base = {("t", str(i)): "$e%d" % rnd.randrange(40) for i in range(3000)}
        for trial in range(5):
            dicts = []
            for _ in range(rnd.randint(2, 5)):
                d = dict(base)
                for _ in range(rnd.randint(0, 30)):
                    key = ("t", str(rnd.randrange(3200)))
                    if rnd.random() < 0.3:
                        d.pop(key, None)
                    else:
                        d[key] = "$e%d" % rnd.randrange(40)
                dicts.append(d)
            sets = [g.intern_state(d) for d in dicts]
            for d, st in zip(dicts, sets):
                self.assertEqual(g.state_to_dict(st), d)
                self.assertEqual(g.state_to_dict(st, like=sets[0]), d)
            for missing in (True, False):
                unconflicted, conflicted = k.separate_interned(sets, missing)
                want_u, want_c = k.separate(dicts, missing)
                self.assertEqual(g.state_to_dict(unconflicted), want_u)
                self.assertEqual(
                    {g.keys[key]: sorted(g.event_id(e) for e in evs) for key, evs in conflicted.items()},
                    {key: sorted(evs) for key, evs in want_c.items()},
                )

    def test_add_event_validates(self) -> None:
        """Out-of-range indices and duplicate IDs are refused."""
        g = self.kernel.Graph()
        g.add_event("$a", [], 0, 0, 0, -1, -1, [])
        self.assertRaises(ValueError, g.add_event, "$a", [], 0, 0, 0, -1, -1, [])
        self.assertRaises(ValueError, g.add_event, "$b", [5], 0, 0, 0, -1, -1, [])
        self.assertRaises(ValueError, g.add_event, "$b", [], 0, 0, 0, 3, -1, [])
        self.assertRaises(ValueError, g.add_event, "$b", [], 0, 0, 0, -1, 7, [])
        self.assertEqual(len(g), 1)
