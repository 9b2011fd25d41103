"""The immutable event (PDU) value type.

Spec: server-server-api "PDUs" and the event format of each room version
(data/api/server-server/definitions/pdu_v1, pdu_v3, pdu_v4, pdu_v6, pdu_v11,
pdu_v12; room version fragments v4-event-format, v6-event-format,
v11-event-format, v12-event-format).

An :class:`Event` is built from the PDU JSON with :meth:`Event.from_pdu`, which
validates the shape for the room version and computes the event ID (and, in
room version 12, the room ID of create events). Everything inside it is
deeply immutable: JSON objects become :class:`FrozenDict` and arrays
:class:`FrozenList`, which still are ``dict`` / ``list`` (they compare equal to
plain ones and encode as JSON) but refuse mutation. Whether an event was rejected is tracked
outside the event.
"""

from __future__ import annotations

from collections.abc import Mapping as _AbcMapping
from typing import Any, Mapping, NoReturn

import attrs

from homeserver.core import ids
from homeserver.core.canonical_json import check_strict_canonical_values
from homeserver.core.errors import InvalidEventError
from homeserver.core.room_versions import EventFormat, RedactionRules, RoomVersion
from homeserver.core.signing import compute_event_id, compute_room_id

# pdu_v1 "depth": must be less than 2**63 - 1. Rooms v6+ further restrict
# every integer to 2**53 - 1 through strict canonical JSON.
MAX_DEPTH = 2**63 - 1


class FrozenDict(dict):  # type: ignore[type-arg]
    """A ``dict`` that refuses mutation.

    It stays a ``dict`` subclass so ``json`` and ``isinstance(x, dict)``
    checks keep working; use :func:`thaw` to get a mutable deep copy.
    """

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FrozenDict is immutable")

    __setitem__ = _immutable
    __delitem__ = _immutable
    __ior__ = _immutable  # type: ignore[assignment]
    clear = _immutable
    pop = _immutable
    popitem = _immutable
    setdefault = _immutable
    update = _immutable

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    def __copy__(self) -> "FrozenDict":
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "FrozenDict":
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return "FrozenDict(%s)" % dict.__repr__(self)


class FrozenList(list):  # type: ignore[type-arg]
    """A ``list`` that refuses mutation (and compares equal to plain lists
    with the same items, unlike a tuple)."""

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FrozenList is immutable")

    __setitem__ = _immutable
    __delitem__ = _immutable
    __iadd__ = _immutable  # type: ignore[assignment]
    __imul__ = _immutable  # type: ignore[assignment]
    append = _immutable
    extend = _immutable
    insert = _immutable
    pop = _immutable
    remove = _immutable
    reverse = _immutable
    sort = _immutable
    clear = _immutable

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __copy__(self) -> "FrozenList":
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> "FrozenList":
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __repr__(self) -> str:
        return "FrozenList(%s)" % list.__repr__(self)


def freeze(value: Any) -> Any:
    """Deep-freeze a JSON value: dicts become :class:`FrozenDict`, lists
    and tuples :class:`FrozenList`; scalars are returned as is."""
    if isinstance(value, (FrozenDict, FrozenList)):
        return value
    # Concrete types first: isinstance against the Mapping ABC is slow and
    # these run over every event parsed or served.
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, dict) or isinstance(value, _AbcMapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Deep-copy a (possibly frozen) JSON value into plain dicts and lists."""
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, dict) or isinstance(value, _AbcMapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _fail(message: str) -> NoReturn:
    raise InvalidEventError(message)


def _require_str(pdu: Mapping[str, Any], key: str) -> str:
    value = pdu.get(key)
    if not isinstance(value, str):
        _fail("Event field %r must be a string" % key)
    return value


def _require_int(pdu: Mapping[str, Any], key: str) -> int:
    value = pdu.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        _fail("Event field %r must be an integer" % key)
    return value


def _is_acceptable_event_id(event_id: str, room_version: RoomVersion) -> bool:
    """Hash-based event IDs (rooms v3+) must be exactly a hash. Rooms v1/v2
    IDs are only required to look like ``$opaque:domain`` (fragment
    v1-event-ids) without validating the domain's grammar, as Synapse does,
    so old rooms with odd IDs stay readable."""
    if room_version.event_format is EventFormat.V1:
        return ids.is_valid_event_id(event_id) and ":" in event_id
    return ids.is_valid_event_id(event_id, room_version)


def _event_id_list(pdu: Mapping[str, Any], key: str, room_version: RoomVersion) -> tuple[str, ...]:
    """Normalise ``prev_events`` / ``auth_events`` to a tuple of event IDs.

    Rooms v1/v2 (pdu_v1) use ``[[event_id, {"sha256": ...}], ...]``; later
    formats plain event ID strings.
    """
    value = pdu.get(key)
    if not isinstance(value, (list, tuple)):
        _fail("Event field %r must be a list" % key)
    result = []
    for item in value:
        if room_version.event_format is EventFormat.V1:
            if (
                not isinstance(item, (list, tuple))
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], Mapping)
            ):
                _fail("Entries of %r must be [event_id, hashes] pairs" % key)
            event_id = item[0]
        else:
            if not isinstance(item, str):
                _fail("Entries of %r must be event ID strings" % key)
            event_id = item
        if not _is_acceptable_event_id(event_id, room_version):
            _fail("Invalid event ID %r in %r" % (event_id, key))
        result.append(event_id)
    return tuple(result)


def _stored_id_list(value: Any, room_version: RoomVersion) -> tuple[str, ...]:
    """``prev_events`` / ``auth_events`` of an already validated PDU as event IDs."""
    if room_version.event_format is EventFormat.V1:
        return tuple(item[0] for item in value)
    return tuple(value)


@attrs.frozen(eq=False, repr=False)
class Event:
    """An event (PDU) of a room, immutable, with its computed event ID.

    Build with :meth:`from_pdu`. ``state_key`` is None for non-state events;
    ``auth_event_ids`` / ``prev_event_ids`` are plain event IDs whatever the
    room version's wire format. ``content`` is a :class:`FrozenDict`.
    """

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    content: FrozenDict
    auth_event_ids: tuple[str, ...]
    prev_event_ids: tuple[str, ...]
    depth: int
    origin_server_ts: int
    redacts: str | None
    room_version: RoomVersion
    _pdu: FrozenDict = attrs.field(alias="pdu")

    @classmethod
    def from_pdu(cls, pdu: Mapping[str, Any], room_version: RoomVersion) -> "Event":
        """Validate ``pdu`` against the event format of ``room_version`` and
        build the event.

        Spec: server-server-api "Checks performed on receipt of a PDU" step 1
        (the event format of the room version). Computes the event ID for
        room versions 3+ (the reference hash; an ``event_id`` key, if present,
        is ignored and dropped) and takes it from the PDU in v1/v2. In room
        version 12, the create event has no ``room_id``: it is derived from
        the event ID. Strict canonical JSON values are enforced in rooms v6+.
        Raises :class:`InvalidEventError` (a ValueError).
        """
        if not isinstance(pdu, Mapping):
            _fail("An event must be a JSON object")
        fmt = room_version.event_format
        if fmt is not EventFormat.V1 and "event_id" in pdu:
            pdu = {k: v for k, v in pdu.items() if k != "event_id"}

        event_type = _require_str(pdu, "type")
        sender = _require_str(pdu, "sender")
        if not ids.is_valid_user_id(sender):
            _fail("Invalid sender %r" % (sender,))
        content = pdu.get("content")
        if not isinstance(content, Mapping):
            _fail("Event field 'content' must be an object")
        origin_server_ts = _require_int(pdu, "origin_server_ts")
        depth = _require_int(pdu, "depth")
        if not 0 <= depth <= MAX_DEPTH:
            _fail("Event depth %d is out of range" % depth)
        state_key = pdu.get("state_key")
        if state_key is not None and not isinstance(state_key, str):
            _fail("Event field 'state_key' must be a string")
        for key in ("hashes", "signatures", "unsigned"):
            if key in pdu and not isinstance(pdu[key], Mapping):
                _fail("Event field %r must be an object" % key)
        prev_event_ids = _event_id_list(pdu, "prev_events", room_version)
        auth_event_ids = _event_id_list(pdu, "auth_events", room_version)

        if room_version.strict_canonical_json:
            try:
                check_strict_canonical_values(pdu)
            except ValueError as e:
                _fail("Event is not valid canonical JSON: %s" % e)

        try:
            event_id = compute_event_id(room_version, pdu)
        except ValueError as e:
            _fail("Cannot compute the event ID: %s" % e)
        if not _is_acceptable_event_id(event_id, room_version):
            _fail("Invalid event ID %r" % (event_id,))

        is_hashed_create = (
            room_version.room_id_is_create_event_hash
            and event_type == "m.room.create"
            and state_key == ""
        )
        if is_hashed_create:
            # rooms/v12 auth rule 1.2: a create event carrying room_id is
            # rejected by the auth rules, not refused here, so that the
            # rejection is recorded; we still derive the real room ID.
            if "room_id" in pdu and not isinstance(pdu["room_id"], str):
                _fail("Event field 'room_id' must be a string")
            room_id = compute_room_id(room_version, pdu)
        else:
            room_id = _require_str(pdu, "room_id")
            if not ids.is_valid_room_id(room_id, room_version):
                _fail("Invalid room ID %r" % (room_id,))

        redacts: str | None
        if event_type == "m.room.redaction":
            # v11-event-format: `redacts` moved into content in rooms v11+.
            if room_version.redaction_rules is RedactionRules.V11:
                raw = content.get("redacts")
            else:
                raw = pdu.get("redacts")
            redacts = raw if isinstance(raw, str) else None
        else:
            redacts = None

        return cls(
            event_id=event_id,
            room_id=room_id,
            type=event_type,
            state_key=state_key,
            sender=sender,
            content=freeze(content),
            auth_event_ids=auth_event_ids,
            prev_event_ids=prev_event_ids,
            depth=depth,
            origin_server_ts=origin_server_ts,
            redacts=redacts,
            room_version=room_version,
            pdu=freeze(pdu),
        )

    @classmethod
    def from_stored(cls, pdu: Mapping[str, Any], room_version: RoomVersion, event_id: str) -> "Event":
        """Rebuild an event this server already accepted, from its stored PDU and event ID.

        The PDU was validated by :meth:`from_pdu` (and its event ID computed)
        before it was persisted, so neither is done again: no format checks,
        no reference hash. Use only for PDUs read back from this server's own
        store or bus, never for anything a remote party sent. Raises
        ``KeyError``/``TypeError`` if the PDU lacks the basic fields.
        """
        if room_version.event_format is not EventFormat.V1 and "event_id" in pdu:
            pdu = {k: v for k, v in pdu.items() if k != "event_id"}
        frozen = freeze(pdu)
        event_type = frozen["type"]
        state_key = frozen.get("state_key")
        content = frozen.get("content")
        if (
            room_version.room_id_is_create_event_hash
            and event_type == "m.room.create"
            and state_key == ""
        ):
            # rooms v12: the room ID is the create event's ID with "!" for "$".
            room_id = "!" + event_id[1:]
        else:
            room_id = frozen["room_id"]
        redacts = None
        if event_type == "m.room.redaction":
            raw = content.get("redacts") if room_version.redaction_rules is RedactionRules.V11 else frozen.get("redacts")
            redacts = raw if isinstance(raw, str) else None
        return cls(
            event_id=event_id,
            room_id=room_id,
            type=event_type,
            state_key=state_key,
            sender=frozen["sender"],
            content=content,
            auth_event_ids=_stored_id_list(frozen["auth_events"], room_version),
            prev_event_ids=_stored_id_list(frozen["prev_events"], room_version),
            depth=frozen["depth"],
            origin_server_ts=frozen["origin_server_ts"],
            redacts=redacts,
            room_version=room_version,
            pdu=frozen,
        )

    # --- accessors ----------------------------------------------------------

    def is_state(self) -> bool:
        """Whether this is a state event (it has a ``state_key``)."""
        return self.state_key is not None

    @property
    def state_key_tuple(self) -> tuple[str, str]:
        """``(type, state_key)``; only meaningful for state events."""
        if self.state_key is None:
            raise ValueError("Event %s is not a state event" % self.event_id)
        return (self.type, self.state_key)

    @property
    def auth_event_ids_with_create(self) -> tuple[str, ...]:
        """``auth_event_ids`` plus, in room version 12, the create event
        that every non-create event implicitly cites (its ID is the room ID
        with ``$`` for ``!``). This is the auth DAG edge set Synapse uses for
        auth chains."""
        if (
            self.room_version.room_id_is_create_event_hash
            and not (self.type == "m.room.create" and self.state_key == "")
        ):
            return self.auth_event_ids + ("$" + self.room_id[1:],)
        return self.auth_event_ids

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an ``m.room.member`` event, else None."""
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def hashes(self) -> Mapping[str, Any]:
        """The ``hashes`` object (empty if absent)."""
        return self._pdu.get("hashes") or FrozenDict()

    @property
    def signatures(self) -> Mapping[str, Any]:
        """The ``signatures`` object (empty if absent)."""
        return self._pdu.get("signatures") or FrozenDict()

    @property
    def unsigned(self) -> Mapping[str, Any]:
        """The ``unsigned`` object (empty if absent)."""
        return self._pdu.get("unsigned") or FrozenDict()

    @property
    def pdu(self) -> FrozenDict:
        """The PDU as received (frozen). For v3+ formats it has no
        ``event_id`` key."""
        return self._pdu

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level PDU field (frozen)."""
        return self._pdu.get(key, default)

    def get_pdu_json(self) -> dict[str, Any]:
        """A mutable deep copy of the PDU as sent over federation.

        For v1/v2 it contains ``event_id``; for v3+ formats it does not (the
        ID is the reference hash). In room version 12 the create event has
        no ``room_id``.
        """
        return thaw(self._pdu)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.event_id == other.event_id
            and self.room_version == other.room_version
            and self._pdu == other._pdu
        )

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return "<Event %s %s state_key=%r sender=%s>" % (
            self.event_id,
            self.type,
            self.state_key,
            self.sender,
        )

