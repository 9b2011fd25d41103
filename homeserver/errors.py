"""Errors that carry a Matrix ``errcode`` and an HTTP status.

Handlers raise these; the HTTP edge (``homeserver.http.server``) turns them
into the JSON error body of the client-server API ("Standard error response",
``content/client-server-api/_index.md``). Nothing here imports Twisted, so
handlers and pure logic may raise them freely.
"""

from __future__ import annotations

from typing import Any


class Codes:
    """The ``errcode`` values the spec defines, as constants."""

    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    CAPTCHA_NEEDED = "M_CAPTCHA_NEEDED"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    CANNOT_LEAVE_SERVER_NOTICE_ROOM = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
    UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"
    INVALID_SIGNATURE = "M_INVALID_SIGNATURE"
    UNKNOWN_POS = "M_UNKNOWN_POS"


class MatrixError(Exception):
    """A refusal with an HTTP status, an ``errcode`` and a human message.

    ``extra`` fields are merged into the JSON body (``retry_after_ms``,
    ``soft_logout``, UIA's ``flows``...).
    """

    def __init__(self, code: int, errcode: str, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.code = code
        self.errcode = errcode
        self.msg = msg
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        """The response body for this error."""
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.msg}
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"MatrixError({self.code}, {self.errcode!r}, {self.msg!r})"


def bad_json(msg: str) -> MatrixError:
    """400 ``M_BAD_JSON``: well-formed JSON of the wrong shape."""
    return MatrixError(400, Codes.BAD_JSON, msg)


def not_json(msg: str = "Content not JSON.") -> MatrixError:
    """400 ``M_NOT_JSON``: the body does not parse."""
    return MatrixError(400, Codes.NOT_JSON, msg)


def missing_param(name: str) -> MatrixError:
    """400 ``M_MISSING_PARAM``."""
    return MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")


def invalid_param(msg: str) -> MatrixError:
    """400 ``M_INVALID_PARAM``."""
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def forbidden(msg: str) -> MatrixError:
    """403 ``M_FORBIDDEN``."""
    return MatrixError(403, Codes.FORBIDDEN, msg)


def not_found(msg: str = "Not found") -> MatrixError:
    """404 ``M_NOT_FOUND``."""
    return MatrixError(404, Codes.NOT_FOUND, msg)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    """429 ``M_LIMIT_EXCEEDED`` with the time after which a retry may work."""
    return MatrixError(
        429, Codes.LIMIT_EXCEEDED, "Too many requests", retry_after_ms=int(retry_after_ms)
    )
