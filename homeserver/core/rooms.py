"""Value types and domain errors shared by the room store and the room handlers.

The store (``storage/stores/events.py``) raises these; the handlers catch
them. Neither imports the other (STYLE.md layering), both import this.
"""

from __future__ import annotations

import attrs


class ExtremitiesChangedError(Exception):
    """The room's forward extremities moved under a writer (another writer, or a stale cache)."""


class DuplicateTransactionError(Exception):
    """The client transaction ID was already used; ``event_id`` is the event it produced."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"transaction already used for {event_id}")
        self.event_id = event_id


class RoomExistsError(Exception):
    """A room with this ID already exists."""


class AliasInUseError(Exception):
    """The room alias is already mapped."""


@attrs.frozen
class TxnKey:
    """The scope of a client transaction ID: one device of one user, in one room."""

    user_id: str
    device_id: str
    room_id: str
    txn_id: str


@attrs.frozen
class NewRoomRow:
    """The ``rooms`` row of a room being created."""

    room_id: str
    room_version: str
    creator: str
    is_public: bool
    created_ts: int


@attrs.frozen
class OutboundPdu:
    """Queue an event for the other servers of its room, in the transaction that persists it.

    The destinations are the servers with joined members once the event is
    applied (read in that same transaction), plus ``also`` (the target's
    server of a kick or ban), less ``exclude`` (this server, the origin of a
    relayed membership). ``payload`` is the PDU as sent over federation.
    """

    payload: str
    queued_ts: int
    exclude: tuple[str, ...]
    also: tuple[str, ...] = ()
