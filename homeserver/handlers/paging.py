"""Opaque counter tokens (``<prefix><decimal>``) for the paginated part-B endpoints."""

from __future__ import annotations

import re

from homeserver.errors import invalid_param

_DIGITS = re.compile(r"[0-9]{1,18}")


def encode_counter(prefix: str, value: int) -> str:
    """``prefix`` followed by ``value`` in decimal."""
    return f"{prefix}{value}"


def decode_counter(prefix: str, token: object, what: str = "pagination token") -> int:
    """The counter of a token made by :func:`encode_counter`; 400 ``M_INVALID_PARAM`` otherwise
    (also for values that would not fit a PostgreSQL bigint)."""
    if not isinstance(token, str) or not token.startswith(prefix) or not _DIGITS.fullmatch(token[len(prefix):]):
        raise invalid_param(f"Invalid {what}")
    return int(token[len(prefix):])
