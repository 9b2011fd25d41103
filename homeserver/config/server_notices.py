"""The ``server_notices`` config section (client-server API, "Server Notices")."""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs

from homeserver.config._base import Reader


@attrs.frozen
class ServerNoticesConfig:
    """No ``system_mxid_localpart``: server notices are off."""

    system_mxid_localpart: Optional[str] = None
    #: Kept for config compatibility with Synapse; the system user has no
    #: profile of its own yet, so clients show its user ID.
    system_mxid_display_name: str = "Server Notices"
    room_name: str = "Server Notices"

    @property
    def enabled(self) -> bool:
        return self.system_mxid_localpart is not None


def parse_server_notices(r: Reader) -> ServerNoticesConfig:
    """Parse ``server_notices`` (absent: disabled)."""
    return ServerNoticesConfig(
        system_mxid_localpart=r.string("system_mxid_localpart", None, pattern=r"[a-z0-9._=\-/]{1,64}", what="a user localpart"),
        system_mxid_display_name=r.string("system_mxid_display_name", "Server Notices"),
        room_name=r.string("room_name", "Server Notices"),
    )


SERVER_NOTICES_SECTIONS: dict[str, Callable[[Reader], Any]] = {"server_notices": parse_server_notices}
