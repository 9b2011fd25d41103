"""Sync and pagination tokens (pure). DESIGN.md §3.

A :class:`StreamToken` is the client's position in every stream feeding
/sync: one position per shard of ``events``, ``receipts`` and ``typing``,
and the ``account_data`` position. Positions come from PostgreSQL sequences
(typing's from its shard owner's sequence too), so a token stays valid
across restarts of any worker.

Wire form: ``s1`` then one section per stream, each a letter and the shard
positions in base 36 joined by ``.``; sections are joined by ``_``::

    s1_e0.1z.0.5_r0.0_t0.0_a4_p0.3

The ``p`` (presence), ``d`` (to-device) and ``l`` (device lists) sections
are optional, in that order: a token without one (from before the stream
existed, or an installation without it) reads as position 0 on every shard
of it.

Tokens are opaque to clients. The shard counts are checked when decoding, so
a token from another installation layout is refused instead of misread.

A :class:`TopoToken` is a point in one room's topological order
(``depth``, ``position``), used by ``/messages`` and ``/context``:
``t<depth>_<position>`` in base 36.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import attrs

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_NUM = re.compile(r"^[0-9a-z]{1,13}$")
_STREAMS = (("e", "events"), ("r", "receipts"), ("t", "typing"))
MAX_POSITION = 2**63 - 1


class InvalidTokenError(ValueError):
    """A token that does not parse, or does not fit this installation."""


def _b36(n: int) -> str:
    if n < 0:
        raise ValueError("positions are never negative")
    if n == 0:
        return "0"
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_BASE36[r])
    return "".join(reversed(digits))


def _parse_num(text: str) -> int:
    if not _NUM.match(text):
        raise InvalidTokenError(f"bad number {text!r} in token")
    value = int(text, 36)
    if value > MAX_POSITION:
        raise InvalidTokenError("position out of range")
    return value


@attrs.frozen
class StreamToken:
    """A vector of stream positions (one per shard) plus account data."""

    events: tuple[int, ...]
    receipts: tuple[int, ...]
    typing: tuple[int, ...]
    account_data: int = 0
    presence: tuple[int, ...] = ()
    to_device: tuple[int, ...] = ()
    device_lists: tuple[int, ...] = ()

    @classmethod
    def zero(cls, shard_counts: Mapping[str, int]) -> "StreamToken":
        """The token before anything happened."""
        return cls(
            events=(0,) * shard_counts["events"],
            receipts=(0,) * shard_counts["receipts"],
            typing=(0,) * shard_counts["typing"],
            account_data=0,
            presence=(0,) * shard_counts.get("presence", 0),
            to_device=(0,) * shard_counts.get("to_device", 0),
            device_lists=(0,) * shard_counts.get("device_lists", 0),
        )

    def encode(self) -> str:
        """The opaque string handed to clients."""
        parts = ["s1"]
        for letter, name in _STREAMS:
            parts.append(letter + ".".join(_b36(p) for p in getattr(self, name)))
        parts.append("a" + _b36(self.account_data))
        if self.presence:
            parts.append("p" + ".".join(_b36(p) for p in self.presence))
        if self.to_device:
            parts.append("d" + ".".join(_b36(p) for p in self.to_device))
        if self.device_lists:
            parts.append("l" + ".".join(_b36(p) for p in self.device_lists))
        return "_".join(parts)

    @classmethod
    def decode(cls, text: str, shard_counts: Mapping[str, int]) -> "StreamToken":
        """Parse a token made by :meth:`encode` for the same shard counts."""
        if not isinstance(text, str) or len(text) > 4096:
            raise InvalidTokenError("not a sync token")
        parts = text.split("_")
        if len(parts) not in (5, 6, 7, 8) or parts[0] != "s1":
            raise InvalidTokenError("not a sync token")
        values: dict[str, tuple[int, ...]] = {}
        for (letter, name), part in zip(_STREAMS, parts[1:4]):
            if not part.startswith(letter):
                raise InvalidTokenError(f"missing {name} section")
            positions = tuple(_parse_num(p) for p in part[1:].split("."))
            if len(positions) != shard_counts[name]:
                raise InvalidTokenError(f"token has {len(positions)} {name} shards, this server {shard_counts[name]}")
            values[name] = positions
        if not parts[4].startswith("a"):
            raise InvalidTokenError("missing account data section")
        optional = {"presence": (0,) * shard_counts.get("presence", 0),
                    "to_device": (0,) * shard_counts.get("to_device", 0),
                    "device_lists": (0,) * shard_counts.get("device_lists", 0)}
        remaining = [("p", "presence"), ("d", "to_device"), ("l", "device_lists")]
        for part in parts[5:]:
            while remaining and not part.startswith(remaining[0][0]):
                remaining.pop(0)
            if not remaining:
                raise InvalidTokenError("bad optional section")
            name = remaining.pop(0)[1]
            positions = tuple(_parse_num(p) for p in part[1:].split("."))
            if len(positions) != shard_counts.get(name, 0):
                raise InvalidTokenError(f"token has {len(positions)} {name} shards, this server {shard_counts.get(name, 0)}")
            optional[name] = positions
        return cls(values["events"], values["receipts"], values["typing"], _parse_num(parts[4][1:]),
                   optional["presence"], optional["to_device"], optional["device_lists"])

    def max_with(self, other: "StreamToken") -> "StreamToken":
        """The component-wise maximum of two tokens."""
        return StreamToken(
            events=_vmax(self.events, other.events),
            receipts=_vmax(self.receipts, other.receipts),
            typing=_vmax(self.typing, other.typing),
            account_data=max(self.account_data, other.account_data),
            presence=_vmax(self.presence, other.presence) if self.presence and other.presence else self.presence or other.presence,
            to_device=(_vmax(self.to_device, other.to_device) if self.to_device and other.to_device
                       else self.to_device or other.to_device),
            device_lists=(_vmax(self.device_lists, other.device_lists) if self.device_lists and other.device_lists
                          else self.device_lists or other.device_lists),
        )

    def is_after_or_equal(self, other: "StreamToken") -> bool:
        """Whether every component of this token is >= the other's."""
        return self.max_with(other) == self


def _vmax(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    if len(a) != len(b):
        raise ValueError("tokens of different shard counts")
    return tuple(max(x, y) for x, y in zip(a, b))


@attrs.frozen(order=True)
class TopoToken:
    """A point between events in one room's topological order."""

    depth: int
    position: int

    def encode(self) -> str:
        """``t<depth>_<position>``; a backfilled event's negative position is written ``n<-position>``."""
        position = _b36(self.position) if self.position >= 0 else "n" + _b36(-self.position)
        return f"t{_b36(self.depth)}_{position}"

    @classmethod
    def decode(cls, text: str) -> "TopoToken":
        """Parse :meth:`encode` output."""
        if not isinstance(text, str) or not text.startswith("t") or len(text) > 64:
            raise InvalidTokenError("not a pagination token")
        depth, sep, position = text[1:].partition("_")
        if not sep:
            raise InvalidTokenError("not a pagination token")
        if position.startswith("n"):
            return cls(_parse_num(depth), -_parse_num(position[1:]))
        return cls(_parse_num(depth), _parse_num(position))
