"""End to end: the issue-8 surfaces (OpenID, space hierarchy, knock, federation directory
endpoints) are mounted on the roles the router sends them to, in a real multi-process stack."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import Stack, layout_three


class Issue8SurfaceTests(unittest.TestCase):
    timeout = 180

    async def call(self, stack: Stack, method: str, path: str, body: Any = None, token: str = None) -> tuple[int, Any]:
        headers = {b"Content-Type": [b"application/json"]}
        if token is not None:
            headers[b"Authorization"] = [f"Bearer {token}".encode()]
        data = json.dumps(body).encode() if body is not None else None
        d = treq.request(method, stack.base + path, data=data, headers=headers, persistent=False)
        d.addTimeout(20, reactor)
        resp = await d
        return resp.code, await treq.json_content(resp)

    async def register(self, stack: Stack, name: str) -> str:
        code, body = await self.call(stack, "POST", "/_matrix/client/v3/register",
                                     {"username": name, "password": f"password for {name} 1", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, body)
        return body["access_token"]

    def test_surfaces_through_the_router(self):
        return defer.ensureDeferred(self._surfaces())

    async def _surfaces(self) -> None:
        stack = Stack(self, reactor, layout_three(None))
        await stack.start()
        alice = await self.register(stack, "alice")
        bob = await self.register(stack, "bob")

        # OpenID: the token comes from a client writer, userinfo from federation_inbound.
        code, body = await self.call(stack, "POST", f"/_matrix/client/v3/user/{quote('@alice:localhost')}/openid/request_token",
                                     {}, token=alice)
        self.assertEqual(code, 200, body)
        code, info = await self.call(stack, "GET", "/_matrix/federation/v1/openid/userinfo?"
                                     + urlencode({"access_token": body["access_token"]}))
        self.assertEqual((code, info), (200, {"sub": "@alice:localhost"}))

        # A space with one child: the hierarchy is served by a client reader.
        code, body = await self.call(stack, "POST", "/_matrix/client/v3/createRoom",
                                     {"preset": "public_chat", "name": "space", "creation_content": {"type": "m.space"}}, token=alice)
        self.assertEqual(code, 200, body)
        space = body["room_id"]
        code, body = await self.call(stack, "POST", "/_matrix/client/v3/createRoom",
                                     {"preset": "private_chat", "name": "knockable", "room_version": "10",
                                      "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                                         "content": {"join_rule": "knock"}}]}, token=alice)
        self.assertEqual(code, 200, body)
        child = body["room_id"]
        code, body = await self.call(stack, "PUT", f"/_matrix/client/v3/rooms/{quote(space)}/state/m.space.child/{quote(child)}",
                                     {"via": ["localhost"]}, token=alice)
        self.assertEqual(code, 200, body)
        code, body = await self.call(stack, "GET", f"/_matrix/client/v1/rooms/{quote(space)}/hierarchy", token=bob)
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [space, child])

        # A local knock through the router, seen by alice.
        code, body = await self.call(stack, "POST", f"/_matrix/client/v3/knock/{quote(child)}", {}, token=bob)
        self.assertEqual(code, 200, body)
        code, body = await self.call(stack, "GET", f"/_matrix/client/v3/rooms/{quote(child)}/members?membership=knock", token=alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([e["state_key"] for e in body["chunk"]], ["@bob:localhost"])

        # The federation endpoints exist (401 without X-Matrix, not 404).
        for method, path in (("GET", "/_matrix/federation/v1/publicRooms"),
                             ("GET", f"/_matrix/federation/v1/make_knock/{quote(child)}/{quote('@x:other')}?ver=10"),
                             ("PUT", f"/_matrix/federation/v1/send_knock/{quote(child)}/$e"),
                             ("PUT", f"/_matrix/federation/v1/invite/{quote(child)}/$e"),
                             ("GET", f"/_matrix/federation/v1/timestamp_to_event/{quote(child)}?ts=0&dir=f"),
                             ("GET", f"/_matrix/federation/v1/hierarchy/{quote(space)}")):
            code, body = await self.call(stack, method, path, {} if method == "PUT" else None)
            self.assertEqual((code, body.get("errcode")), (401, "M_UNAUTHORIZED"), path)
