"""RemoteQueries: remote profile and alias look-ups (fake federation client, fake clock)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.errors import MatrixError
from homeserver.federation.errors import HttpResponseError, NotRetryingDestination, RequestSendFailed
from homeserver.federation.queries import RemoteQueries


class FakeClient:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.calls: list[tuple[str, str, dict]] = []

    async def get_json(self, destination: str, path: str, args: Any = None) -> Any:
        self.calls.append((destination, path, dict(args or {})))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class RemoteQueriesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.queries = RemoteQueries(self.clock, self.client, cache_ms=60_000)

    async def assertErrcode(self, call: Any, code: int, errcode: str) -> None:
        with self.assertRaises(MatrixError) as caught:
            await call
        self.assertEqual((caught.exception.code, caught.exception.errcode), (code, errcode))

    async def test_profile_asked_of_the_users_server_and_cached(self) -> None:
        """The query goes to the user's server; the answer is reused until cache_ms passes."""
        self.client.answers = [{"displayname": "Bob", "avatar_url": None}, {"displayname": "Robert"}]
        self.assertEqual(await self.queries.profile("@bob:b.test"), {"displayname": "Bob"})
        self.assertEqual(self.client.calls, [("b.test", "/_matrix/federation/v1/query/profile", {"user_id": "@bob:b.test"})])
        self.assertEqual(await self.queries.profile("@bob:b.test"), {"displayname": "Bob"})
        self.assertEqual(len(self.client.calls), 1)
        self.clock.advance(61)
        self.assertEqual(await self.queries.profile("@bob:b.test"), {"displayname": "Robert"})

    async def test_profile_field(self) -> None:
        """One field is asked with ``field``; an unset field is M_NOT_FOUND."""
        self.client.answers = [{"displayname": "Bob"}, {}]
        self.assertEqual(await self.queries.profile("@bob:b.test", "displayname"), {"displayname": "Bob"})
        self.assertEqual(self.client.calls[0][2], {"user_id": "@bob:b.test", "field": "displayname"})
        await self.assertErrcode(self.queries.profile("@bob:b.test", "avatar_url"), 404, "M_NOT_FOUND")

    async def test_errors_mapped(self) -> None:
        """A remote 4xx keeps its status and errcode; 5xx, unreachable, backoff and junk are 502."""
        self.client.answers = [
            HttpResponseError("b.test", 404, {"errcode": "M_NOT_FOUND", "error": "no"}, "M_NOT_FOUND"),
            HttpResponseError("b.test", 403, {}, None),
            HttpResponseError("b.test", 500, {}, None),
            RequestSendFailed("b.test", "refused"),
            NotRetryingDestination("b.test", 0),
            ["not", "an", "object"],
        ]
        await self.assertErrcode(self.queries.profile("@a:b.test"), 404, "M_NOT_FOUND")
        await self.assertErrcode(self.queries.profile("@b:b.test"), 403, "M_UNKNOWN")
        for user in ("@c:b.test", "@d:b.test", "@e:b.test", "@f:b.test"):
            await self.assertErrcode(self.queries.profile(user), 502, "M_UNKNOWN")

    async def test_invalid_user_id(self) -> None:
        """A malformed user ID is refused before anything is sent."""
        await self.assertErrcode(self.queries.profile("@bob:bad host!"), 400, "M_INVALID_PARAM")
        self.assertEqual(self.client.calls, [])

    async def test_alias(self) -> None:
        """An alias resolves to its room ID and servers (junk entries dropped); a bad answer is 502."""
        self.client.answers = [{"room_id": "!r:b.test", "servers": ["b.test", 5, ""]}, {"room_id": 7}]
        self.assertEqual(await self.queries.alias("#hall:b.test"), ("!r:b.test", ["b.test"]))
        self.assertEqual(self.client.calls[0], ("b.test", "/_matrix/federation/v1/query/directory", {"room_alias": "#hall:b.test"}))
        self.assertEqual(await self.queries.alias("#hall:b.test"), ("!r:b.test", ["b.test"]))
        await self.assertErrcode(self.queries.alias("#other:b.test"), 502, "M_UNKNOWN")
