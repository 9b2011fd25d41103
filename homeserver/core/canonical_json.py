"""Canonical JSON: the byte encoding used for signing and hashing, and strict
decoding of JSON received from the network.

Spec: appendices "Canonical JSON" (content/appendices.md) and the room version
fragments v1-canonical-json / v6-canonical-json. Room versions 6 and later
strictly enforce the grammar: integers only, within +/-(2**53 - 1), no floats.
Older room versions may carry floats and large integers, which we still need to
hash byte-for-byte like other servers do (Python's float repr, as Synapse).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# appendices "Canonical JSON": integers in [-(2**53)+1, (2**53)-1].
CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -CANONICALJSON_MAX_INT

_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    separators=(",", ":"),
    sort_keys=True,
)


def _check_encodable(obj: Any, allow_floats: bool, check_int_range: bool) -> None:
    """Walk ``obj`` and raise ValueError for anything canonical JSON cannot
    represent (non-string keys, floats when refused, lone surrogates)."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if value is None or value is True or value is False:
            continue
        # dict before the abstract Mapping: isinstance against an ABC is
        # many times slower, and this walk runs over every signed event.
        if isinstance(value, dict) or isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError("JSON object keys must be strings, not %r" % (key,))
                _check_no_surrogates(key)
                stack.append(item)
        elif isinstance(value, str):
            _check_no_surrogates(value)
        elif isinstance(value, int):
            if check_int_range and not (
                CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT
            ):
                raise ValueError("Integer %d outside the canonical JSON range" % value)
        elif isinstance(value, float):
            if not allow_floats:
                raise ValueError("Floats are not permitted in canonical JSON")
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("NaN and infinities are not valid JSON")
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        else:
            raise ValueError("%s is not JSON serialisable" % type(value).__name__)


def _check_no_surrogates(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("String contains a lone surrogate code point") from None


def encode_canonical_json(
    obj: Any, *, allow_floats: bool = False, strict_int_range: bool = False
) -> bytes:
    """Encode ``obj`` as Canonical JSON bytes (appendices "Canonical JSON").

    The shortest UTF-8 encoding with object keys sorted by code point, no
    insignificant whitespace, non-ASCII characters emitted as UTF-8 and only
    control characters escaped.

    Floats are refused unless ``allow_floats`` (needed only to hash events of
    room versions 1-5 that contain them). Integers outside +/-(2**53 - 1) are
    refused when ``strict_int_range`` (room versions 6+). Raises ValueError.
    """
    _check_encodable(obj, allow_floats, strict_int_range)
    return _ENCODER.encode(obj).encode("utf-8")


def encode_pretty_json(obj: Any) -> bytes:
    """Encode ``obj`` as compact (not necessarily canonical) UTF-8 JSON, for
    HTTP responses. Keys are not sorted; floats are allowed."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError("Invalid JSON constant %s" % name)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("Duplicate key %r in JSON object" % (key,))
        _check_no_surrogates(key)
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise ValueError("Floats are not permitted: %s" % text)


def _strict_int(text: str) -> int:
    value = int(text)
    if not CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT:
        raise ValueError("Integer %s outside the canonical JSON range" % text)
    return value


def _check_strings(obj: Any) -> None:
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _check_no_surrogates(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def decode_json(data: bytes | str, strict: bool) -> Any:
    """Parse JSON received from the network, raising ValueError on anything
    invalid.

    Always refused: invalid UTF-8, duplicate object keys, ``NaN`` /
    ``Infinity``, lone surrogate escapes (they cannot be re-encoded as UTF-8
    for hashing). When ``strict`` (room versions 6+, appendices "Canonical
    JSON" and fragment v6-canonical-json): floats, exponents and integers
    outside +/-(2**53 - 1) are refused too. ``-0`` is read as ``0`` (the
    grammar's ``number = ["-"] int`` admits it; Synapse accepts it).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError("Invalid UTF-8 in JSON: %s" % e) from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_reject_constant,
            parse_float=_reject_float if strict else float,
            parse_int=_strict_int if strict else int,
        )
    except json.JSONDecodeError as e:
        raise ValueError("Invalid JSON: %s" % e) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    _check_strings(value)
    return value


def check_strict_canonical_values(obj: Any) -> None:
    """Check an already-decoded value against the strict canonical JSON value
    rules (fragment v6-canonical-json): no floats, integers within
    +/-(2**53 - 1). Raises ValueError."""
    _check_encodable(obj, allow_floats=False, check_int_range=True)


def _integralise(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT:
            return int(value)
        raise ValueError("%r is not an integer" % (value,))
    if isinstance(value, dict):
        return {k: _integralise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integralise(v) for v in value]
    return value


def canonicalise_json(data: bytes | str) -> bytes:
    """Rewrite any JSON text as canonical JSON.

    Spec: appendices "Canonical JSON" examples: numbers written with
    exponents or as ``-0`` that denote integers in range become plain
    integers (``{"a": -0, "b": 1e10}`` gives ``{"a":0,"b":10000000000}``);
    other non-integers are refused with ValueError.
    """
    return encode_canonical_json(
        _integralise(decode_json(data, strict=False)), strict_int_range=True
    )
