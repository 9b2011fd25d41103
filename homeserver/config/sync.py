"""The ``sync`` config section."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from homeserver.config._base import Reader

#: Default of ``sync.wake_batch_ms``.
DEFAULT_WAKE_BATCH_MS = 10
#: Default of ``sync.min_interval_ms``.
DEFAULT_MIN_INTERVAL_MS = 100


@attrs.frozen
class SyncConfig:
    """``sync.wake_batch_ms``: how long a woken long-poll waits for the rest of a
    burst before answering (see ``homeserver.handlers.sync.notifier``); 0 answers at once.
    ``sync.min_interval_ms``: the least time between a long-poll's answer and the answer
    to the long-poll continuing from it (see ``SyncHandler``); 0: no minimum."""

    wake_batch_ms: int = DEFAULT_WAKE_BATCH_MS
    min_interval_ms: int = DEFAULT_MIN_INTERVAL_MS


def parse_sync(reader: Reader) -> SyncConfig:
    """Parse the ``sync`` section (absent: defaults)."""
    return SyncConfig(
        wake_batch_ms=reader.integer("wake_batch_ms", DEFAULT_WAKE_BATCH_MS, minimum=0, maximum=1000),
        min_interval_ms=reader.integer("min_interval_ms", DEFAULT_MIN_INTERVAL_MS, minimum=0, maximum=5000),
    )


#: The sections this module contributes to :data:`homeserver.config.SECTIONS`.
SYNC_SECTIONS: dict[str, Callable[[Reader], Any]] = {"sync": parse_sync}
