"""User-id rules the accounts API needs (registration and login).

Follows "User Identifiers" in the appendices: localparts of new accounts use
``a-z 0-9 . _ = - / +``, and the whole id is at most 255 bytes. When
``homeserver.core.ids`` lands on main these delegate to it.
"""

from __future__ import annotations

import re
from typing import Optional

from homeserver.errors import Codes, MatrixError

MAX_USER_ID_BYTES = 255
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+\Z")


def invalid_username(msg: str) -> MatrixError:
    """400 ``M_INVALID_USERNAME``."""
    return MatrixError(400, Codes.INVALID_USERNAME, msg)


def check_localpart_for_registration(localpart: str, server_name: str) -> str:
    """The full user id for ``localpart``, or ``M_INVALID_USERNAME``.

    Like Synapse: lowercase-only grammar, no leading ``_`` (reserved for
    application services), not all digits (reserved for guests), and the
    full id within 255 bytes.
    """
    if not localpart:
        raise invalid_username("User ID cannot be empty")
    if not _LOCALPART.match(localpart):
        raise invalid_username("User ID can only contain characters a-z, 0-9, or '=_-./+'")
    if localpart[0] == "_":
        raise invalid_username("User ID may not begin with _")
    if localpart.isdigit():
        raise invalid_username("Numeric user IDs are reserved for guest users")
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode("utf-8")) > MAX_USER_ID_BYTES:
        raise invalid_username(f"User ID may not be longer than {MAX_USER_ID_BYTES} characters")
    return user_id


def qualify_user_id(user: str, server_name: str) -> Optional[str]:
    """``alice`` or ``@alice:hs`` → ``@alice:hs``; None for another server or a malformed id."""
    if user.startswith("@"):
        localpart, sep, domain = user[1:].partition(":")
        if not sep or not localpart or domain != server_name:
            return None
        return user
    if not user or ":" in user:
        return None
    return f"@{user}:{server_name}"


def localpart_of(user_id: str) -> str:
    """The localpart of ``@localpart:server``."""
    return user_id[1:].partition(":")[0]


def server_of(user_id: str) -> str:
    """The server name of a user id ("" if malformed)."""
    return user_id.partition(":")[2]
