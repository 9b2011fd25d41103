"""C and Python state resolution agree on generated DAGs (DESIGN.md
invariant 6), and both are deterministic and order-independent."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.state import _kernel, _pure, resolve_state
from homeserver.state._auth import is_allowed
from homeserver.state.dags import random_room

try:
    c_kernel: Any = _kernel.load_c_kernel()
except ImportError:
    c_kernel = None


def _checker(room_version: Any):  # type: ignore[no-untyped-def]
    return lambda event, auth_state: is_allowed(room_version, event, auth_state)


def _python_resolver(room_version, state_sets, event_map, rejected):  # type: ignore[no-untyped-def]
    return resolve_state(room_version, state_sets, event_map, rejected_event_ids=rejected, kernel=_pure)


rooms = st.builds(
    lambda version, seed, forks, per_fork, power_bias: (version, seed, forks, per_fork, power_bias),
    st.sampled_from(["1", "2", "6", "8", "9", "10", "11", "12"]),
    st.integers(0, 2**32),
    st.integers(2, 4),
    st.integers(2, 10),
    st.sampled_from([0.1, 0.3, 0.6]),
)


class DifferentialTests(SynchronousTestCase):
    skip = None if c_kernel is not None else "C kernel not built"

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rooms)
    def test_c_and_python_agree(self, params: tuple) -> None:
        """Random forked rooms (power changes, bans, joins, leaves, topics,
        rejected events, merges) resolve identically with both kernels, and
        the result does not depend on the state sets' order."""
        version, seed, forks, per_fork, power_bias = params
        rv = KNOWN_ROOM_VERSIONS[version]
        room = random_room(
            rv, seed, _checker(rv), _python_resolver,
            users=5, forks=forks, events_per_fork=per_fork, power_bias=power_bias,
        )
        py = resolve_state(rv, room.state_sets, room.event_map, rejected_event_ids=room.rejected, kernel=_pure)
        c = resolve_state(rv, room.state_sets, room.event_map, rejected_event_ids=room.rejected, kernel=c_kernel)
        self.assertEqual(c, py)
        again = resolve_state(
            rv, list(reversed(room.state_sets)), room.event_map, rejected_event_ids=room.rejected, kernel=c_kernel
        )
        self.assertEqual(again, c)
        # Every resolved value is an event of the room at its own key.
        for key, event_id in c.items():
            event = room.event_map[event_id]
            self.assertEqual((event.type, event.state_key), key)
