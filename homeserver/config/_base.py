"""Typed reading of the YAML config: one clear error naming the key path.

Sections are ``@attrs.frozen`` classes built by ``parse`` functions that read
a plain mapping through :class:`Reader`. A reader knows where it is in the
document (``instances.sync1.listen``), so every complaint names the key, and
it remembers which keys were read so that the rest can be reported as
unknown (typos are caught at startup).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Optional, TypeVar

T = TypeVar("T")

_MISSING = object()


class ConfigError(Exception):
    """An invalid config value, with the dotted path of the offending key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class Reader:
    """A view of one mapping of the config with its path and used keys."""

    def __init__(self, data: Any, path: str = "", unknown: Optional[list[str]] = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(data)}")
        self.data = data
        self.path = path
        self._used: set[str] = set()
        self.unknown = unknown if unknown is not None else []

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def _get(self, key: str, default: Any) -> Any:
        self._used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ConfigError(self.key_path(key), "is required")
            return default
        return value

    def string(self, key: str, default: Any = _MISSING, pattern: Optional[str] = None, what: str = "") -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise ConfigError(self.key_path(key), f"expected a string, got {_kind(value)}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ConfigError(self.key_path(key), f"expected {what or 'a value matching ' + pattern}")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: Optional[int] = None, maximum: Optional[int] = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key_path(key), f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key_path(key), f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.key_path(key), f"must be at most {maximum}")
        return value

    def number(self, key: str, default: Any = _MISSING, minimum: Optional[float] = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.key_path(key), f"expected a number, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key_path(key), f"must be at least {minimum}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key_path(key), f"expected true or false, got {_kind(value)}")
        return value

    def string_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key_path(key), "expected a list of strings")
        return tuple(value)

    def listen(self, key: str, default: Any = _MISSING) -> Any:
        """A ``host:port`` listener address (``[::1]:8008`` for IPv6)."""
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_listen(value)
        except ValueError:
            raise ConfigError(self.key_path(key), "expected host:port")

    def section(self, key: str, required: bool = False) -> "Reader":
        value = self._get(key, _MISSING if required else {})
        child = Reader(value, self.key_path(key), self.unknown)
        return child

    def mapping_items(self, key: str) -> Iterator[tuple[str, "Reader"]]:
        """Each entry of a mapping of mappings, as (name, reader)."""
        value = self._get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(self.key_path(key), f"expected a mapping, got {_kind(value)}")
        for name, sub in value.items():
            if not isinstance(name, str):
                raise ConfigError(self.key_path(key), "keys must be strings")
            yield name, Reader(sub, f"{self.key_path(key)}.{name}", self.unknown)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default)

    def finish(self) -> None:
        """Record the keys nobody read as unknown."""
        for key in self.data:
            if key not in self._used:
                self.unknown.append(self.key_path(str(key)))


def parse_listen(value: Any) -> tuple[str, int]:
    """``"host:port"`` → ``(host, port)``; raises ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(value)
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([A-Za-z0-9.\-]+):(\d{1,5})", value)
    if not m:
        raise ValueError(value)
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ValueError(value)
    return host, port


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def each(fn: Callable[[Reader], T], reader: Reader) -> T:
    """Run a section parser and then flag the keys it did not read."""
    result = fn(reader)
    reader.finish()
    return result
