"""Matrix identifiers: server names, user IDs, room IDs, room aliases, event
IDs and device IDs.

Spec: appendices "Identifier Grammar" (content/appendices.md): "Server Name",
"Common Identifier Format", "User Identifiers" (and "Historical User IDs"),
"Room IDs", "Room Aliases", "Event IDs". Every parser raises ``ValueError``
with a message saying what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
import string
import attrs

from homeserver.core.room_versions import EventFormat, RoomVersion

# appendices "User Identifiers", "Room Aliases", "Event IDs", "Room IDs": the
# whole identifier, sigil and domain included, must not exceed 255 bytes.
MAX_ID_BYTES = 255

_USER_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+\Z")
# appendices "Server Name": dns-name = 1*255 of [A-Za-z0-9.-], "a series of
# labels separated by '.'" (no empty labels, as Synapse also requires).
_DNS_NAME_RE = re.compile(r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
_URLSAFE_B64_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_STD_B64_CHARS = frozenset(string.ascii_letters + string.digits + "+/")


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split a server name into ``(host, port)``, validating it.

    Spec: appendices "Server Name": ``hostname [":" port]`` where hostname is
    a dotted-quad IPv4 literal (each part 0-255), a bracketed IPv6 literal
    (RFC 3513 section 2.2) or a DNS name of 1-255 characters from
    ``[A-Za-z0-9.-]`` made of non-empty dot-separated labels; the port is 1-5
    digits. Raises ValueError.
    """
    if not isinstance(server_name, str) or not server_name:
        raise ValueError("Server name must be a non-empty string")
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            raise ValueError("Unterminated IPv6 literal in server name %r" % server_name)
        host = server_name[: end + 1]
        rest = server_name[end + 1 :]
        literal = host[1:-1]
        if not 2 <= len(literal) <= 45 or not set(literal) <= _IPV6_CHARS:
            raise ValueError("Invalid IPv6 literal in server name %r" % server_name)
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(
                "Invalid IPv6 literal in server name %r" % server_name
            ) from None
    else:
        host, sep, port_part = server_name.partition(":")
        rest = sep + port_part
        m = _IPV4_RE.match(host)
        if m:
            if any(int(part) > 255 for part in m.groups()):
                raise ValueError("Invalid IPv4 literal in server name %r" % server_name)
        elif len(host) > 255 or not _DNS_NAME_RE.match(host):
            raise ValueError("Invalid host name in server name %r" % server_name)
    if not rest:
        return host, None
    if not rest.startswith(":") or not _PORT_RE.match(rest[1:]):
        raise ValueError("Invalid port in server name %r" % server_name)
    return host, int(rest[1:])


def is_valid_server_name(server_name: str) -> bool:
    """Whether ``server_name`` matches appendices "Server Name"."""
    try:
        parse_server_name(server_name)
    except ValueError:
        return False
    return True


def _split_id(sigil: str, value: str, kind: str) -> tuple[str, str]:
    """Split ``&localpart:domain`` on the first colon, checking the sigil,
    length and domain; the localpart is returned unchecked."""
    if not isinstance(value, str):
        raise ValueError("%s must be a string, not %s" % (kind, type(value).__name__))
    if not value.startswith(sigil):
        raise ValueError("%s %r does not start with %r" % (kind, value, sigil))
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError("%s %r is longer than %d bytes" % (kind, value, MAX_ID_BYTES))
    localpart, sep, domain = value[1:].partition(":")
    if not sep:
        raise ValueError("%s %r has no ':domain' part" % (kind, value))
    try:
        parse_server_name(domain)
    except ValueError as e:
        raise ValueError("%s %r has an invalid domain: %s" % (kind, value, e)) from None
    return localpart, domain


def _check_opaque_localpart(localpart: str, value: str, kind: str) -> None:
    """Historical / opaque localparts: any non-surrogate code point except
    ``:`` and NUL (appendices "Historical User IDs", "Room IDs")."""
    for ch in localpart:
        if ch == "\x00":
            raise ValueError("%s %r contains NUL" % (kind, value))
        if "\ud800" <= ch <= "\udfff":
            raise ValueError("%s %r contains a surrogate code point" % (kind, value))


@attrs.frozen
class UserID:
    """A Matrix user ID ``@localpart:domain`` (appendices "User Identifiers")."""

    localpart: str
    domain: str

    @classmethod
    def parse(cls, value: str, *, historical: bool = True) -> "UserID":
        """Parse and validate a user ID.

        With ``historical`` (the default, for IDs received from other servers
        and in events) the localpart may be any non-surrogate code points
        except ``:`` and NUL, even empty (appendices "Historical User IDs").
        Without it (local registration), the localpart must be non-empty and
        contain only ``a-z 0-9 . _ = - / +``. Raises ValueError.
        """
        localpart, domain = _split_id("@", value, "User ID")
        if historical:
            _check_opaque_localpart(localpart, value, "User ID")
        elif not _USER_LOCALPART_RE.match(localpart):
            raise ValueError(
                "User ID %r localpart must be non-empty and contain only "
                "a-z, 0-9, '.', '_', '=', '-', '/' and '+'" % (value,)
            )
        return cls(localpart, domain)

    def to_string(self) -> str:
        """The ``@localpart:domain`` form."""
        return "@%s:%s" % (self.localpart, self.domain)

    def __str__(self) -> str:
        return self.to_string()

    @property
    def is_compliant(self) -> bool:
        """False for historical user IDs whose localpart is empty or contains
        characters outside U+0021 to U+007E (appendices "Historical User
        IDs")."""
        return bool(self.localpart) and all(
            "\x21" <= ch <= "\x7e" for ch in self.localpart
        )


def is_valid_user_id(value: object, *, historical: bool = True) -> bool:
    """Whether ``value`` is a valid user ID (see :meth:`UserID.parse`)."""
    try:
        UserID.parse(value, historical=historical)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def validate_localpart_for_registration(localpart: str) -> None:
    """Check a localpart a local user asks to register (appendices "User
    Identifiers": ``1*user_id_char``). Raises ValueError."""
    if not isinstance(localpart, str) or not _USER_LOCALPART_RE.match(localpart):
        raise ValueError(
            "User ID localpart must be non-empty and contain only "
            "a-z, 0-9, '.', '_', '=', '-', '/' and '+'"
        )


def get_domain_from_id(value: str) -> str:
    """The domain of a ``&localpart:domain`` identifier (text after the first
    colon). Raises ValueError if there is none."""
    if not isinstance(value, str):
        raise ValueError("Identifier must be a string")
    _, sep, domain = value.partition(":")
    if not sep or not domain:
        raise ValueError("Identifier %r has no domain" % (value,))
    return domain


def get_localpart_from_id(value: str) -> str:
    """The localpart of a ``&localpart:domain`` identifier."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("Identifier %r has no domain" % (value,))
    return value[1:].partition(":")[0]


@attrs.frozen
class RoomAlias:
    """A room alias ``#localpart:domain`` (appendices "Room Aliases")."""

    localpart: str
    domain: str

    @classmethod
    def parse(cls, value: str) -> "RoomAlias":
        """Parse and validate a room alias: any non-surrogate code points but
        ``:`` and NUL in the (non-empty) localpart, a valid server name, at
        most 255 bytes. Raises ValueError."""
        localpart, domain = _split_id("#", value, "Room alias")
        if not localpart:
            raise ValueError("Room alias %r has an empty localpart" % (value,))
        _check_opaque_localpart(localpart, value, "Room alias")
        return cls(localpart, domain)

    def to_string(self) -> str:
        """The ``#localpart:domain`` form."""
        return "#%s:%s" % (self.localpart, self.domain)

    def __str__(self) -> str:
        return self.to_string()


def _check_hash_id(value: str, sigil: str, kind: str, url_safe: bool) -> None:
    body = value[1:]
    allowed = _URLSAFE_B64_CHARS if url_safe else _STD_B64_CHARS
    # sha256 digest in unpadded base64 is 43 characters.
    if len(body) != 43 or not set(body) <= allowed:
        raise ValueError(
            "%s %r is not a %sunpadded base64 sha256 hash"
            % (kind, value, "URL-safe " if url_safe else "")
        )


def validate_room_id(value: str, room_version: RoomVersion | None = None) -> None:
    """Validate a room ID (appendices "Room IDs").

    Room versions 1-11 use ``!opaque:domain``; room version 12 uses ``!`` +
    the create event's reference hash (URL-safe unpadded base64, no domain).
    With no ``room_version`` either form is accepted. Raises ValueError.
    """
    if not isinstance(value, str) or not value.startswith("!"):
        raise ValueError("Room ID %r does not start with '!'" % (value,))
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError("Room ID %r is longer than %d bytes" % (value, MAX_ID_BYTES))
    hashed = room_version is not None and room_version.room_id_is_create_event_hash
    if room_version is None and ":" not in value:
        hashed = True
    if hashed:
        _check_hash_id(value, "!", "Room ID", url_safe=True)
        return
    localpart, _ = _split_id("!", value, "Room ID")
    _check_opaque_localpart(localpart, value, "Room ID")


def is_valid_room_id(value: object, room_version: RoomVersion | None = None) -> bool:
    """Whether ``value`` is a valid room ID (see :func:`validate_room_id`)."""
    try:
        validate_room_id(value, room_version)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def validate_event_id(value: str, room_version: RoomVersion | None = None) -> None:
    """Validate an event ID (appendices "Event IDs", fragments v1-event-ids,
    v4-event-ids, room v3 "Event IDs").

    Room versions 1-2: ``$opaque:domain``; room version 3: ``$`` + standard
    unpadded base64 sha256; 4 and later: URL-safe unpadded base64. With no
    ``room_version``, any ``$``-prefixed string of at most 255 bytes without
    NUL is accepted. Raises ValueError.
    """
    if not isinstance(value, str) or not value.startswith("$"):
        raise ValueError("Event ID %r does not start with '$'" % (value,))
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError("Event ID %r is longer than %d bytes" % (value, MAX_ID_BYTES))
    if room_version is None:
        _check_opaque_localpart(value[1:], value, "Event ID")
        if len(value) < 2:
            raise ValueError("Event ID %r is empty" % (value,))
        return
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        localpart, _ = _split_id("$", value, "Event ID")
        _check_opaque_localpart(localpart, value, "Event ID")
    else:
        _check_hash_id(value, "$", "Event ID", url_safe=fmt is not EventFormat.V2)


def is_valid_event_id(value: object, room_version: RoomVersion | None = None) -> bool:
    """Whether ``value`` is a valid event ID (see :func:`validate_event_id`)."""
    try:
        validate_event_id(value, room_version)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


# Device IDs are opaque (client-server-api "Relationship between access tokens
# and devices"); we only refuse what cannot be stored or displayed safely.
MAX_DEVICE_ID_LENGTH = 255


def validate_device_id(value: str) -> None:
    """Validate a device ID: a non-empty string of at most 255 characters
    without control characters (device IDs are opaque in the spec, so this
    only refuses what cannot be stored or shown safely). Raises ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError("Device ID must be a non-empty string")
    if len(value) > MAX_DEVICE_ID_LENGTH:
        raise ValueError("Device ID is longer than %d characters" % MAX_DEVICE_ID_LENGTH)
    for ch in value:
        if ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff":
            raise ValueError("Device ID %r contains a control character" % (value,))
