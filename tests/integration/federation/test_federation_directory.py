"""Federation /publicRooms, /timestamp_to_event and /openid/userinfo, and the client
``request_token`` behind the last, between two Estuary servers (issue 8)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor, task
from twisted.trial import unittest

from tests.integration.federation.test_two_servers import Homeserver
from tests.utils.federation import FederationTestCase
from tests.utils.wait import wait_until


class DirectoryTests(unittest.TestCase):
    async def wait(self, predicate: Any, what: str) -> None:
        await wait_until(reactor, predicate, timeout=20, what=what)

    async def test_public_rooms(self) -> None:
        """B lists A's published rooms over federation: paging with limit/since, a search filter
        (POST), no unpublished room; unauthenticated and malformed requests are refused; B's
        directory handler answers /publicRooms?server=A through it."""
        from homeserver.handlers.directory import DirectoryHandler
        from storage.stores.directory import DirectoryStore

        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice = await a.register("alice")
        for name in ("alpha", "beta", "gamma"):
            resp = await a.request("POST", "/_matrix/client/v3/createRoom",
                                   {"preset": "public_chat", "visibility": "public", "name": name}, token=alice)
            self.assertEqual(resp.code, 200, resp.body)
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"name": "hidden"}, token=alice)
        self.assertEqual(resp.code, 200, resp.body)

        client = b.federation.events.client
        first = await client.get_json(a.server_name, "/_matrix/federation/v1/publicRooms", args={"limit": "2"})
        self.assertEqual(len(first["chunk"]), 2)
        self.assertEqual(first["total_room_count_estimate"], 3)
        rest = await client.get_json(a.server_name, "/_matrix/federation/v1/publicRooms",
                                     args={"limit": "2", "since": first["next_batch"]})
        names = sorted(r["name"] for r in first["chunk"] + rest["chunk"])
        self.assertEqual(names, ["alpha", "beta", "gamma"])
        self.assertNotIn("next_batch", rest)
        found = await client.post_json(a.server_name, "/_matrix/federation/v1/publicRooms",
                                       {"filter": {"generic_search_term": "bet"}})
        self.assertEqual([r["name"] for r in found["chunk"]], ["beta"])

        for call in (lambda: client.post_json(a.server_name, "/_matrix/federation/v1/publicRooms", {"limit": "x"}),
                     lambda: client.get_json(a.server_name, "/_matrix/federation/v1/publicRooms", args={"limit": "-1"}),
                     lambda: client.post_json(a.server_name, "/_matrix/federation/v1/publicRooms", {"filter": "beta"})):
            with self.assertRaises(Exception) as caught:
                await call()
            self.assertEqual(caught.exception.code, 400)
        resp = await a.request("GET", "/_matrix/federation/v1/publicRooms")
        self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_UNAUTHORIZED"))

        directory = DirectoryHandler(b.server_name, b.rooms.rooms, b.rooms.store, DirectoryStore(b.db))
        directory.remote_public_rooms = b.federation.query_public_rooms
        remote = await directory.public_rooms(a.server_name, 10, None)
        self.assertEqual(sorted(r["name"] for r in remote["chunk"]), ["alpha", "beta", "gamma"])
        filtered = await directory.public_rooms(a.server_name, None, None, {"generic_search_term": "gam"})
        self.assertEqual([r["name"] for r in filtered["chunk"]], ["gamma"])

    async def test_timestamp_to_event(self) -> None:
        """A server in the room finds the event nearest a timestamp in either direction; a server
        not in the room is refused (403); bad and missing parameters are 400; unknown rooms 404."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice, bob = await a.register("alice"), await b.register("bob")
        resp = await a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token=alice)
        room_id = resp.json["room_id"]
        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "hello"}, token=alice)
        message_id = resp.json["event_id"]
        client = b.federation.events.client
        path = f"/_matrix/federation/v1/timestamp_to_event/{quote(room_id)}"
        far_future = str(2**50)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path, args={"ts": far_future, "dir": "b"})
        self.assertEqual(caught.exception.code, 403)

        resp = await b.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}?" + urlencode({"server_name": a.server_name}),
                               {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        latest = await client.get_json(a.server_name, path, args={"ts": far_future, "dir": "b"})
        self.assertNotEqual(latest["event_id"], "")
        first = await client.get_json(a.server_name, path, args={"ts": "0", "dir": "f"})
        create = await a.rooms.store.get_current_state_ids(room_id)
        self.assertEqual(first["event_id"], create[("m.room.create", "")])
        message = await a.rooms.rooms.loader.get_events(room_id, [message_id])
        at_message = await client.get_json(a.server_name, path,
                                           args={"ts": str(message[message_id].origin_server_ts), "dir": "b"})
        self.assertLessEqual(at_message["origin_server_ts"], message[message_id].origin_server_ts)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path, args={"ts": far_future, "dir": "f"})
        self.assertEqual((caught.exception.code, caught.exception.errcode), (404, "M_NOT_FOUND"))
        for args in ({"ts": "0", "dir": "x"}, {"dir": "f"}, {"ts": "soon", "dir": "f"}):
            with self.assertRaises(Exception) as caught:
                await client.get_json(a.server_name, path, args=args)
            self.assertEqual(caught.exception.code, 400, args)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, "/_matrix/federation/v1/timestamp_to_event/!nope:" + a.server_name,
                                  args={"ts": "0", "dir": "f"})
        self.assertEqual(caught.exception.code, 404)

    async def test_openid_token_round_trip(self) -> None:
        """bob@B gets an OpenID token and A (acting as the third party) exchanges it at B's
        /openid/userinfo for bob's ID; unknown tokens are 401; asking for another user's is 403."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        bob = await b.register("bob")
        resp = await b.request("POST", f"/_matrix/client/v3/user/{quote(b.uid('bob'))}/openid/request_token", {}, token=bob)
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual((resp.json["token_type"], resp.json["matrix_server_name"], resp.json["expires_in"]),
                         ("Bearer", b.server_name, 3600))
        token = resp.json["access_token"]
        # A third party calls without X-Matrix; here A's federation client, whose signature B ignores.
        info = await a.federation.events.client.get_json(b.server_name, "/_matrix/federation/v1/openid/userinfo",
                                                         args={"access_token": token})
        self.assertEqual(info, {"sub": b.uid("bob")})
        resp = await b.request("GET", "/_matrix/federation/v1/openid/userinfo?" + urlencode({"access_token": token}))
        self.assertEqual((resp.code, resp.json), (200, {"sub": b.uid("bob")}))
        for query in ("?access_token=" + token[:-2] + "xx", "?access_token=", ""):
            resp = await b.request("GET", "/_matrix/federation/v1/openid/userinfo" + query)
            self.assertEqual((resp.code, resp.json["errcode"]), (401, "M_UNKNOWN_TOKEN"), query)
        stored = await b.db.run_interaction("t", lambda txn: (txn.execute("SELECT token_hash FROM openid_tokens"), txn.fetchall())[1])
        self.assertNotIn(token, [r[0] for r in stored])
        resp = await b.request("POST", f"/_matrix/client/v3/user/{quote('@carol:' + b.server_name)}/openid/request_token",
                               {}, token=bob)
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        resp = await b.request("POST", f"/_matrix/client/v3/user/{quote(b.uid('bob'))}/openid/request_token", {})
        self.assertEqual(resp.code, 401)


class OpenIdExpiryTests(FederationTestCase):
    async def test_tokens_expire(self) -> None:
        """A token works until its lifetime passes on the (fake) clock, then is 401; issuing sweeps expired rows."""
        from homeserver.errors import MatrixError
        from homeserver.handlers.openid import OpenIdHandler
        from storage.stores.openid import OpenIdTokenStore

        clock = task.Clock()
        clock.advance(1000)
        handler = OpenIdHandler(clock, "hs.test", OpenIdTokenStore(self.db), lifetime_ms=60_000)

        class Requester:
            user_id = "@u:hs.test"
            is_guest = False

        token = (await handler.request_token(Requester(), "@u:hs.test"))["access_token"]
        self.assertEqual(await handler.userinfo(token), {"sub": "@u:hs.test"})
        clock.advance(59)
        self.assertEqual(await handler.userinfo(token), {"sub": "@u:hs.test"})
        clock.advance(1)
        with self.assertRaises(MatrixError) as caught:
            await handler.userinfo(token)
        self.assertEqual((caught.exception.code, caught.exception.errcode), (401, "M_UNKNOWN_TOKEN"))
        await handler.request_token(Requester(), "@u:hs.test")
        self.assertEqual(len(self.rows("SELECT 1 FROM openid_tokens")), 1)
