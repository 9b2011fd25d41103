"""Tests for route matching and instance choice in the built-in router."""

from twisted.trial import unittest

from homeserver.config import load_config
from homeserver.sharding import shard_for
from workers.router import Balancer, NoInstance, rendezvous_pick
from workers.routes import ROUTES, match_route


class FakeHealth:
    def __init__(self, healthy):
        self.healthy = set(healthy)

    def is_healthy(self, name):
        return name in self.healthy


def config():
    inst = lambda roles, port, **kw: {"roles": roles, "listen": f"127.0.0.1:{port}", "replication_listen": f"127.0.0.1:{port + 1000}", **kw}
    rest = {s: "all" for s in ("receipts", "typing", "presence", "to_device", "account_data", "device_lists", "push_rules")}
    return load_config(
        {
            "server_name": "hs",
            "replication": {"secret": "x" * 20},
            "streams": {"events": 4},
            "instances": {
                "r1": inst(["client_reader"], 8001),
                "r2": inst(["client_reader"], 8002),
                "s1": inst(["sync"], 8003),
                "s2": inst(["sync"], 8004),
                "s3": inst(["sync"], 8005),
                "w1": inst(["client_writer"], 8006, shards={"events": "0-1", **rest}),
                "w2": inst(["client_writer"], 8007, shards={"events": "2-3"}),
            },
        },
        env={},
    )


class RouteTableTests(unittest.TestCase):
    def test_examples(self):
        """Representative requests match the intended rule and key."""
        cases = {
            ("GET", "/_matrix/client/v3/sync"): ("sync", None),
            ("GET", "/_matrix/client/versions"): ("client_read", None),
            ("PUT", "/_matrix/client/v3/rooms/!a:hs/send/m.room.message/1"): ("room_write", "!a:hs"),
            ("GET", "/_matrix/client/v3/rooms/!a:hs/messages"): ("client_read", None),
            ("POST", "/_matrix/client/v3/join/#alias:hs"): ("join", "#alias:hs"),
            ("PUT", "/_matrix/client/v3/user/@u:hs/account_data/x"): ("user_write", "@u:hs"),
            ("POST", "/_matrix/client/v3/createRoom"): ("client_write", None),
            ("GET", "/_matrix/federation/v1/version"): ("federation", None),
            ("GET", "/_synapse/admin/v1/users"): ("admin", None),
            ("GET", "/_matrix/media/v3/config"): ("media", None),
            ("POST", "/_matrix/client/v3/keys/query"): ("keys_query", None),
            ("POST", "/_matrix/client/v3/keys/upload"): ("client_write", None),
            ("POST", "/_matrix/client/v3/keys/claim"): ("client_write", None),
            ("GET", "/_matrix/client/v3/keys/changes"): ("client_read", None),
        }
        for (method, path), (rule, key) in cases.items():
            m = match_route(method, path)
            self.assertEqual((m.rule.name, m.key), (rule, key), (method, path))
        self.assertIsNone(match_route("GET", "/somewhere/else"))

    def test_issue8_federation_endpoints(self):
        """The knock, restricted-join, invite, directory, OpenID and hierarchy surfaces reach the right role."""
        cases = {
            ("POST", "/_matrix/client/v3/knock/!r:hs"): ("join", "!r:hs"),
            ("POST", "/_matrix/client/v3/user/@u:hs/openid/request_token"): ("client_write", None),
            ("GET", "/_matrix/client/v1/rooms/!r:hs/hierarchy"): ("client_read", None),
            ("GET", "/_matrix/federation/v1/make_knock/!r:hs/@u:o"): ("federation", None),
            ("PUT", "/_matrix/federation/v1/send_knock/!r:hs/$e"): ("federation", None),
            ("PUT", "/_matrix/federation/v1/invite/!r:hs/$e"): ("federation", None),
            ("POST", "/_matrix/federation/v1/publicRooms"): ("federation", None),
            ("GET", "/_matrix/federation/v1/timestamp_to_event/!r:hs"): ("federation", None),
            ("GET", "/_matrix/federation/v1/openid/userinfo"): ("federation", None),
            ("GET", "/_matrix/federation/v1/hierarchy/!r:hs"): ("federation", None),
        }
        for (method, path), (rule, key) in cases.items():
            m = match_route(method, path)
            self.assertEqual((m.rule.name, m.key), (rule, key), (method, path))

    def test_rule_names_unique(self):
        """Rule names are unique (nginx maps key on them)."""
        names = [r.name for r in ROUTES]
        self.assertEqual(len(names), len(set(names)))


class BalancerTests(unittest.TestCase):
    def setUp(self):
        self.config = config()

    def test_room_write_goes_to_owner(self):
        """A room write goes to the writer owning the room's events shard."""
        b = Balancer(self.config, FakeHealth(self.config.instances))
        for i in range(50):
            room = f"!r{i}:hs"
            m = match_route("PUT", f"/_matrix/client/v3/rooms/{room}/send/t/1")
            want = "w1" if shard_for(room, 4) in (0, 1) else "w2"
            self.assertEqual(b.choose(m, None).name, want)

    def test_alias_join_round_robins_writers(self):
        """A join by alias (no shard key) goes to any healthy writer."""
        b = Balancer(self.config, FakeHealth(self.config.instances))
        m = match_route("POST", "/_matrix/client/v3/join/#a:hs")
        self.assertEqual({b.choose(m, None).name for _ in range(4)}, {"w1", "w2"})

    def test_round_robin_skips_unhealthy(self):
        """Round robin uses only instances in rotation; none healthy is NoInstance."""
        b = Balancer(self.config, FakeHealth({"r2", "w1"}))
        m = match_route("GET", "/_matrix/client/versions")
        self.assertEqual({b.choose(m, None).name for _ in range(5)}, {"r2"})
        b = Balancer(self.config, FakeHealth({"w1"}))
        self.assertRaises(NoInstance, b.choose, m, None)

    def test_sync_sticky_per_token(self):
        """The same token always lands on the same sync instance; tokens spread."""
        b = Balancer(self.config, FakeHealth(self.config.instances))
        m = match_route("GET", "/_matrix/client/v3/sync")
        picks = {}
        for i in range(60):
            tok = f"Bearer tok{i}"
            first = b.choose(m, tok).name
            self.assertEqual(b.choose(m, tok).name, first)
            picks[tok] = first
        self.assertEqual(set(picks.values()), {"s1", "s2", "s3"})

    def test_sync_failover_moves_only_lost_clients(self):
        """When a sync instance leaves rotation, only its clients move."""
        all_up = Balancer(self.config, FakeHealth(self.config.instances))
        s2_down = Balancer(self.config, FakeHealth(set(self.config.instances) - {"s2"}))
        m = match_route("GET", "/_matrix/client/v3/sync")
        for i in range(60):
            tok = f"Bearer tok{i}"
            before = all_up.choose(m, tok).name
            after = s2_down.choose(m, tok).name
            if before != "s2":
                self.assertEqual(before, after)
            else:
                self.assertIn(after, {"s1", "s3"})

    def test_rendezvous_is_deterministic(self):
        """Rendezvous choice depends only on key and candidate names."""
        insts = [self.config.instance(n) for n in ("s1", "s2", "s3")]
        self.assertEqual(rendezvous_pick("k", insts).name, rendezvous_pick("k", list(reversed(insts))).name)
