"""Space hierarchies (client /v1/rooms/{roomId}/hierarchy, federation /v1/hierarchy/{roomId})
across two Estuary servers (issue 8)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from twisted.trial import unittest

from tests.integration.federation.test_two_servers import Homeserver


class HierarchyTests(unittest.TestCase):
    async def create(self, hs: Homeserver, token: str, name: str, **body: Any) -> str:
        resp = await hs.request("POST", "/_matrix/client/v3/createRoom", {"room_version": "10", "name": name, **body}, token=token)
        self.assertEqual(resp.code, 200, resp.body)
        return resp.json["room_id"]

    async def add_child(self, hs: Homeserver, token: str, space: str, child: str, via: str, **content: Any) -> None:
        resp = await hs.request("PUT", f"/_matrix/client/v3/rooms/{quote(space)}/state/m.space.child/{quote(child)}",
                                {"via": [via], **content}, token=token)
        self.assertEqual(resp.code, 200, resp.body)

    async def hierarchy(self, hs: Homeserver, token: str, room_id: str, **args: Any) -> Any:
        query = ("?" + urlencode(args)) if args else ""
        return await hs.request("GET", f"/_matrix/client/v1/rooms/{quote(room_id)}/hierarchy{query}", token=token)

    async def setup_spaces(self) -> dict[str, Any]:
        """alice@A's public space S with children R3 (bob@B's public room, order "a"), R1 (public on A,
        order "b", suggested) and R2 (alice's invite-only room), and carol@A in none of the rooms."""
        a = await Homeserver().start(self, "a.test")
        b = await Homeserver().start(self, "b.test")
        alice, carol, bob = await a.register("alice"), await a.register("carol"), await b.register("bob")
        space = await self.create(a, alice, "S", preset="public_chat", creation_content={"type": "m.space"})
        r1 = await self.create(a, alice, "R1", preset="public_chat")
        r2 = await self.create(a, alice, "R2", preset="private_chat")
        r3 = await self.create(b, bob, "R3", preset="public_chat")
        await self.add_child(a, alice, space, r1, a.server_name, order="b", suggested=True)
        await self.add_child(a, alice, space, r2, a.server_name)
        await self.add_child(a, alice, space, r3, b.server_name, order="a")
        return {"a": a, "b": b, "alice": alice, "carol": carol, "bob": bob, "S": space, "R1": r1, "R2": r2, "R3": r3}

    async def test_client_hierarchy_walks_local_and_remote_rooms(self) -> None:
        """alice sees S, then R3 (described by B over federation), R1 and R2 in the spec's order;
        carol does not see the invite-only R2; S's children_state carries origin_server_ts."""
        w = await self.setup_spaces()
        resp = await self.hierarchy(w["a"], w["alice"], w["S"])
        self.assertEqual(resp.code, 200, resp.body)
        ids = [r["room_id"] for r in resp.json["rooms"]]
        self.assertEqual(ids, [w["S"], w["R3"], w["R1"], w["R2"]])
        space = resp.json["rooms"][0]
        self.assertEqual(space["room_type"], "m.space")
        self.assertEqual(space["name"], "S")
        self.assertEqual(len(space["children_state"]), 3)
        self.assertTrue(all(isinstance(c["origin_server_ts"], int) for c in space["children_state"]))
        r3 = resp.json["rooms"][1]
        self.assertEqual((r3["name"], r3["num_joined_members"], r3["join_rule"]), ("R3", 1, "public"))
        self.assertNotIn("next_batch", resp.json)

        resp = await self.hierarchy(w["a"], w["carol"], w["S"])
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [w["S"], w["R3"], w["R1"]])
        resp = await self.hierarchy(w["a"], w["alice"], w["S"], suggested_only="true")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [w["S"], w["R1"]])
        resp = await self.hierarchy(w["a"], w["alice"], w["S"], max_depth="0")
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [w["S"]])

    async def test_client_pagination_and_refusals(self) -> None:
        """limit=1 pages through the same rooms in the same order; the token pins suggested_only and
        max_depth; bad limits are 400; rooms the user may not see are 403."""
        w = await self.setup_spaces()
        seen: list[str] = []
        token = None
        for _ in range(10):
            args: dict[str, Any] = {"limit": "1"}
            if token is not None:
                args["from"] = token
            resp = await self.hierarchy(w["a"], w["alice"], w["S"], **args)
            self.assertEqual(resp.code, 200, resp.body)
            seen += [r["room_id"] for r in resp.json["rooms"]]
            token = resp.json.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, [w["S"], w["R3"], w["R1"], w["R2"]])
        resp = await self.hierarchy(w["a"], w["alice"], w["S"], limit="1")
        resp = await self.hierarchy(w["a"], w["alice"], w["S"], limit="1", suggested_only="true",
                                    **{"from": resp.json["next_batch"]})
        self.assertEqual((resp.code, resp.json["errcode"]), (400, "M_INVALID_PARAM"))
        for args in ({"limit": "0"}, {"max_depth": "-1"}, {"from": "garbage!"}, {"suggested_only": "yes"}):
            resp = await self.hierarchy(w["a"], w["alice"], w["S"], **args)
            self.assertEqual(resp.code, 400, args)
        resp = await self.hierarchy(w["a"], w["carol"], w["R2"])
        self.assertEqual((resp.code, resp.json["errcode"]), (403, "M_FORBIDDEN"))
        resp = await self.hierarchy(w["a"], w["carol"], "!unknown:" + w["a"].server_name)
        self.assertEqual(resp.code, 403)
        resp = await w["a"].request("GET", f"/_matrix/client/v1/rooms/{quote(w['S'])}/hierarchy")
        self.assertEqual(resp.code, 401)

    async def test_federation_hierarchy(self) -> None:
        """B asks A for S: the public child R1 is described, the invite-only R2 is listed as
        inaccessible, R3 (A is not in it) is left out; suggested_only keeps R1 only; bob@B's client
        walk of S goes through A; once S's ACL denies B, A answers 404."""
        w = await self.setup_spaces()
        a, b = w["a"], w["b"]
        client = b.federation.events.client
        path = f"/_matrix/federation/v1/hierarchy/{quote(w['S'])}"
        answer = await client.get_json(a.server_name, path)
        self.assertEqual(answer["room"]["room_id"], w["S"])
        self.assertEqual([c["room_id"] for c in answer["children"]], [w["R1"]])
        self.assertEqual(answer["inaccessible_children"], [w["R2"]])
        answer = await client.get_json(a.server_name, path, args={"suggested_only": "true"})
        self.assertEqual(([c["room_id"] for c in answer["children"]], answer["inaccessible_children"]), ([w["R1"]], []))
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, f"/_matrix/federation/v1/hierarchy/{quote(w['R2'])}")
        self.assertEqual(caught.exception.code, 404)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path, args={"suggested_only": "maybe"})
        self.assertEqual(caught.exception.code, 400)

        resp = await self.hierarchy(b, w["bob"], w["S"])
        self.assertEqual(resp.code, 200, resp.body)
        self.assertEqual([r["room_id"] for r in resp.json["rooms"]], [w["S"], w["R3"], w["R1"]])

        resp = await a.request("PUT", f"/_matrix/client/v3/rooms/{quote(w['S'])}/state/m.room.server_acl/",
                               {"allow": ["*"], "deny": ["b.test"]}, token=w["alice"])  # ACLs match host names, without port
        self.assertEqual(resp.code, 200, resp.body)
        with self.assertRaises(Exception) as caught:
            await client.get_json(a.server_name, path)
        self.assertEqual(caught.exception.code, 404)
        resp = await self.hierarchy(b, w["bob"], w["S"])
        self.assertEqual(resp.code, 403, resp.body)
