"""The wire format of one stream entry (see bus/PROTOCOL.md).

Pure functions: no Redis, no I/O. An entry's Redis ID is ``<position>-0``;
its fields are ``v`` (format version), ``prev`` (omitted when unknown) and
``data`` (the payload, a JSON object in UTF-8).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from bus.errors import MalformedEntry
from bus.model import MAX_POSITION, Entry, validate_position

VERSION = b"1"

FIELD_VERSION = b"v"
FIELD_PREV = b"prev"
FIELD_DATA = b"data"


def entry_id(position: int) -> str:
    """The Redis Stream ID of the entry at ``position``: ``"<position>-0"``."""
    return f"{validate_position(position)}-0"


def after_id(position: int) -> str:
    """The ID to pass to XREAD to get the entries strictly after ``position``.

    ``0`` (nothing seen yet) gives ``"0-0"``: every entry of the stream.
    """
    if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position <= MAX_POSITION:
        raise ValueError(f"invalid position: {position!r}")
    return f"{position}-0"


def parse_entry_id(raw: bytes | str) -> int:
    """The position encoded in a Redis Stream ID; ``MalformedEntry`` if it is not ours."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    ms, sep, seq = text.partition("-")
    if sep != "-" or seq != "0" or not ms.isdigit():
        raise MalformedEntry(f"stream ID {text!r} is not of the form <position>-0")
    position = int(ms)
    if not 1 <= position <= MAX_POSITION:
        raise MalformedEntry(f"stream ID {text!r} has no valid position")
    return position


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Serialise a payload: compact JSON with sorted keys, UTF-8."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping, not {type(payload).__name__}")
    return json.dumps(
        payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def to_fields(prev: int | None, payload: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The XADD field/value pairs of an entry.

    ``prev`` is the position the writer published before on the same shard,
    or ``None`` when it does not know.
    """
    fields = {FIELD_VERSION: VERSION}
    if prev is not None:
        if not isinstance(prev, int) or isinstance(prev, bool) or not 0 <= prev <= MAX_POSITION:
            raise ValueError(f"invalid prev position: {prev!r}")
        fields[FIELD_PREV] = str(prev).encode("ascii")
    fields[FIELD_DATA] = encode_payload(payload)
    return fields


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def from_fields(
    stream: str, shard: int, raw_id: bytes | str, fields: Mapping[bytes | str, bytes | str]
) -> Entry:
    """Decode one entry read from ``stream``/``shard``.

    Raises ``MalformedEntry`` for anything that does not follow the
    protocol (unknown version, bad numbers, a payload that is not a JSON
    object), so a consumer can report it as a gap instead of crashing.
    """
    position = parse_entry_id(raw_id)
    norm = {_as_bytes(k): _as_bytes(v) for k, v in fields.items()}
    version = norm.get(FIELD_VERSION)
    if version != VERSION:
        raise MalformedEntry(f"entry {position}: unsupported version {version!r}")
    prev: int | None = None
    raw_prev = norm.get(FIELD_PREV)
    if raw_prev is not None:
        if not raw_prev.isdigit():
            raise MalformedEntry(f"entry {position}: bad prev {raw_prev!r}")
        prev = int(raw_prev)
        if prev >= position:
            raise MalformedEntry(f"entry {position}: prev {prev} is not below it")
    raw_data = norm.get(FIELD_DATA)
    if raw_data is None:
        raise MalformedEntry(f"entry {position}: no data field")
    try:
        payload = json.loads(raw_data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedEntry(f"entry {position}: data is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise MalformedEntry(f"entry {position}: data is not a JSON object")
    return Entry(stream=stream, shard=shard, position=position, prev=prev, payload=payload)
