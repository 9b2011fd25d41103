"""Value types and errors shared by the account stores and handlers.

They live in core so that ``storage/`` (which may import core value types)
and ``homeserver/handlers`` (which may not import concrete storage modules)
can both use them.
"""

from __future__ import annotations

from typing import Optional

import attrs


@attrs.frozen
class NewSession:
    """Tokens to store for a device (hashes only; the clear tokens go to the client)."""

    access_token_hash: bytes
    access_valid_until_ms: Optional[int]
    refresh_token_hash: Optional[bytes] = None
    refresh_expiry_ts: Optional[int] = None


class UserInUse(Exception):
    """The user id (compared ignoring case) is already registered."""


class ProfileTooLarge(Exception):
    """Storing the value would take the profile over its size limit."""


class TokenExists(Exception):
    """A registration token with that name exists already."""
