"""The C kernel does not leak: running it in a loop keeps memory flat."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.state import _kernel, _pure, resolve_state
from homeserver.state._auth import is_allowed
from homeserver.state.dags import random_room

try:
    c_kernel: Any = _kernel.load_c_kernel()
except ImportError:
    c_kernel = None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LeakTests(SynchronousTestCase):
    skip = None if c_kernel is not None and os.path.exists("/proc/self/statm") else "needs the C kernel and /proc"

    def _room(self) -> Any:
        rv = KNOWN_ROOM_VERSIONS["11"]
        return random_room(
            rv, 7, lambda e, s: is_allowed(rv, e, s),
            lambda v, ss, em, rj: resolve_state(v, ss, em, rejected_event_ids=rj, kernel=_pure),
            users=6, forks=4, events_per_fork=10,
        )

    def _exercise(self, room: Any) -> None:
        resolve_state(room.room_version, room.state_sets, room.event_map,
                      rejected_event_ids=room.rejected, kernel=c_kernel)
        g = c_kernel.Graph()
        k = g.add_key(("k", ""))
        for i in range(50):
            g.add_event("$%d" % i, [i - 1] if i else [], i, i % 3, 3 | 8, k, -1, [k])
        try:  # error paths must release what they took
            g.add_event("$bad", [999], 0, 0, 0, -1, -1, [])
        except ValueError:
            pass
        try:
            g.iterative_auth(list(range(50)), g.intern_state({}), {}, self._boom)
        except ZeroDivisionError:
            pass
        g.auth_difference([0], [[10], [20]])
        g.conflicted_subgraph([5, 40])
        g.power_sort(range(50))
        g.mainline_sort(range(50), -1)
        c_kernel.separate([{"a": "1", "b": "2"}, {"a": "1", "c": "3"}], True)
        d1 = {("k", ""): "$1", ("x", ""): "$2"}
        d2 = dict(d1)
        d2[("k", "")] = "$3"
        s1 = g.intern_state(d1)
        s2 = g.intern_state(d2)  # lockstep with s1
        unconflicted, _ = c_kernel.separate_interned([s1, s2], True)
        g.state_to_dict(g.merge_state(unconflicted, {k: 4}), like=s1)
        try:
            g.intern_state({("k", ""): "$unknown"})
        except KeyError:
            pass

    @staticmethod
    def _boom(e: int, auth: list) -> bool:
        return bool(1 // (e - 25))

    def test_memory_stays_flat(self) -> None:
        """A thousand resolutions and kernel calls (including error paths)
        through the C kernel grow neither RSS nor the live object count."""
        room = self._room()
        for _ in range(30):
            self._exercise(room)
        gc.collect()
        rss0, blocks0 = _rss_bytes(), sys.getallocatedblocks()
        for _ in range(1000):
            self._exercise(room)
        gc.collect()
        rss1, blocks1 = _rss_bytes(), sys.getallocatedblocks()
        # A leaked reference per call would leave >= 1000 blocks behind.
        self.assertLess(blocks1 - blocks0, 500)
        self.assertLess(rss1 - rss0, 4 * 1024 * 1024)
