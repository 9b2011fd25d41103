"""The ``sync`` config section."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from homeserver.config._base import Reader

#: Default of ``sync.wake_batch_ms``.
DEFAULT_WAKE_BATCH_MS = 10


@attrs.frozen
class SyncConfig:
    """``sync.wake_batch_ms``: how long a woken long-poll waits for the rest of a
    burst before answering (see ``homeserver.handlers.sync.notifier``); 0 answers at once."""

    wake_batch_ms: int = DEFAULT_WAKE_BATCH_MS


def parse_sync(reader: Reader) -> SyncConfig:
    """Parse the ``sync`` section (absent: defaults)."""
    return SyncConfig(wake_batch_ms=reader.integer("wake_batch_ms", DEFAULT_WAKE_BATCH_MS, minimum=0, maximum=1000))


#: The sections this module contributes to :data:`homeserver.config.SECTIONS`.
SYNC_SECTIONS: dict[str, Callable[[Reader], Any]] = {"sync": parse_sync}
