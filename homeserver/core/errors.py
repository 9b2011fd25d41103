"""Exceptions raised by the pure Matrix core.

These are domain errors: they say what is wrong with the input. Mapping them
to HTTP status codes and Matrix ``errcode`` values is done once, at the HTTP
edge.
"""

from __future__ import annotations


class AuthError(Exception):
    """An event failed the authorisation rules of its room version.

    Spec: rooms/v*.md "Authorisation rules". ``reason`` is a human-readable
    explanation naming the rule that refused the event.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventSizeError(AuthError):
    """The event exceeds the size limits a server applies before auth
    (client-server-api "Size limits": 65536 bytes per PDU, 255 bytes for
    several fields).

    ``unpersistable`` is True when the event must be dropped outright; False
    when older servers accepted it, so it must be stored as rejected to keep
    the room's DAG intact (Synapse's distinction, rooms v1-v10 byte limits).
    """

    def __init__(self, reason: str, unpersistable: bool = True) -> None:
        super().__init__(reason)
        self.unpersistable = unpersistable


class InvalidEventError(ValueError):
    """A PDU does not comply with the event format of its room version."""


class UnsupportedRoomVersionError(ValueError):
    """A room version identifier this server does not know."""


class SignatureVerifyError(ValueError):
    """A JSON object is not validly signed (appendices "Checking for a
    Signature")."""


class OneTimeKeyConflict(Exception):
    """A one-time key ID was uploaded again with different contents (``/keys/upload``)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id
