"""Password hashing (bcrypt, off the reactor thread) and the password policy."""

from __future__ import annotations

import re
import secrets
from typing import Any, Callable, Optional

import bcrypt
from twisted.internet import defer, threads

from homeserver.errors import Codes, MatrixError

#: Longest password accepted. bcrypt itself reads only the first 72 bytes
#: (as in Synapse); the cap just keeps absurd inputs out.
MAX_PASSWORD_LENGTH = 512


def check_password_policy(password: str, policy: Any) -> None:
    """Raise 400 ``M_WEAK_PASSWORD`` unless ``password`` satisfies ``policy``.

    ``policy`` is a :class:`homeserver.config.accounts.PasswordPolicyConfig`.
    Oversized passwords are refused whatever the policy (``M_INVALID_PARAM``).
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, "Password too long")
    if not policy.enabled:
        return
    if len(password) < policy.minimum_length:
        raise MatrixError(400, Codes.WEAK_PASSWORD, f"Password must be at least {policy.minimum_length} characters")
    if policy.require_digit and not re.search(r"\d", password):
        raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must contain a digit")
    if policy.require_symbol and not re.search(r"[^\w\s]|_", password):
        raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must contain a symbol")
    if policy.require_lowercase and not re.search(r"[a-z]", password):
        raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must contain a lowercase letter")
    if policy.require_uppercase and not re.search(r"[A-Z]", password):
        raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must contain an uppercase letter")


class PasswordHasher:
    """bcrypt hashing and checking, run in a thread so the reactor keeps serving.

    ``run_in_thread(fn, *args) -> Deferred`` defaults to the reactor's thread
    pool; tests may pass a synchronous runner.
    """

    def __init__(self, reactor: Any, rounds: int = 12, run_in_thread: Optional[Callable[..., Any]] = None) -> None:
        self._rounds = rounds
        self._dummy_hash: Optional[str] = None
        if run_in_thread is None:
            def run_in_thread(fn: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
                return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
        self._run = run_in_thread

    def _hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode("utf-8")[:72], bcrypt.gensalt(self._rounds)).decode("ascii")

    @staticmethod
    def _check(password: str, stored: str) -> bool:
        try:
            return bcrypt.checkpw(password.encode("utf-8")[:72], stored.encode("ascii"))
        except ValueError:
            return False

    async def hash(self, password: str) -> str:
        """A bcrypt hash of ``password``."""
        return await self._run(self._hash, password)

    async def check(self, password: str, stored: Optional[str]) -> bool:
        """Whether ``password`` matches ``stored`` (False if there is no hash).

        Without a stored hash, a hash of the same cost is still checked, so
        that the response time does not tell whether the account exists.
        """
        if not stored:
            await self._run(self._check, password, await self._dummy())
            return False
        return await self._run(self._check, password, stored)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        return self._dummy_hash


class PasswordVerifier:
    """``await verifier(user_id, password)``: whether it is that account's current password.

    Used by UIA's ``m.login.password`` stage; deactivated and unknown
    accounts never match.
    """

    def __init__(self, accounts: Any, hasher: PasswordHasher) -> None:
        self._accounts = accounts
        self._hasher = hasher

    async def __call__(self, user_id: str, password: str) -> bool:
        user = await self._accounts.get_user(user_id)
        if user is None or user.deactivated:
            return False
        return await self._hasher.check(password, user.password_hash)
