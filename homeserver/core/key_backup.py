"""Value types of server-side key backups, shared by the handler and the store."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class BackupKey:
    """One backed-up session key (``KeyBackupData``) of a room."""

    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ``KeyBackupData`` object."""
        return {"first_message_index": self.first_message_index, "forwarded_count": self.forwarded_count,
                "is_verified": self.is_verified, "session_data": self.session_data}


def prefer(new: BackupKey, old: BackupKey) -> bool:
    """Whether ``new`` replaces the stored ``old`` key: verified beats unverified, then the lower
    ``first_message_index``, then the lower ``forwarded_count`` (spec, "Server-side key backups")."""
    if new.is_verified != old.is_verified:
        return new.is_verified
    if new.first_message_index != old.first_message_index:
        return new.first_message_index < old.first_message_index
    return new.forwarded_count < old.forwarded_count
