"""The ``presence`` config section."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from homeserver.config._base import Reader


@attrs.frozen
class PresenceConfig:
    """``presence.enabled`` (default true): false stores, sends and shows no presence."""

    enabled: bool = True


def parse_presence(reader: Reader) -> PresenceConfig:
    """Parse the ``presence`` section (absent: defaults)."""
    return PresenceConfig(enabled=reader.boolean("enabled", True))


#: The sections this module contributes to :data:`homeserver.config.SECTIONS`.
PRESENCE_SECTIONS: dict[str, Callable[[Reader], Any]] = {"presence": parse_presence}
