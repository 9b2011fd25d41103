"""Forwarding commands to shard owners over the real replication API."""

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

from homeserver.config import load_config
from homeserver.errors import MatrixError, forbidden
from homeserver.http.server import JsonResource, make_site
from homeserver.replication import CommandDispatcher
from homeserver.sharding import shard_for
from workers.embedded import free_port
from workers.replication import HttpReplicationClient, mount_replication_server

SECRET = "replication-secret-for-tests"


class ReplicationTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.ports = {n: (free_port(), free_port()) for n in ("w1", "w2")}
        rest = {s: "all" for s in ("receipts", "typing", "presence", "to_device", "account_data", "device_lists", "push_rules")}
        self.config = load_config(
            {
                "server_name": "hs",
                "replication": {"secret": SECRET},
                "streams": {"events": 4},
                "instances": {
                    "w1": {"roles": ["client_writer"], "listen": f"127.0.0.1:{self.ports['w1'][0]}", "replication_listen": f"127.0.0.1:{self.ports['w1'][1]}", "shards": {"events": "0-1", **rest}},
                    "w2": {"roles": ["client_writer"], "listen": f"127.0.0.1:{self.ports['w2'][0]}", "replication_listen": f"127.0.0.1:{self.ports['w2'][1]}", "shards": {"events": "2-3"}},
                },
            },
            env={},
        )
        self.ran = []
        self.dispatchers = {}
        self.clients = []
        self.listeners = {}
        for name in ("w1", "w2"):
            client = HttpReplicationClient(reactor, SECRET, timeout=5, attempts=3, base_delay=0.05)
            self.clients.append(client)
            disp = CommandDispatcher(self.config, name, client)

            async def send(args, name=name):
                if args.get("refuse"):
                    raise forbidden("not allowed")
                self.ran.append((name, args["room_id"]))
                return {"ran_on": name, "room_id": args["room_id"]}

            disp.register("send", "events", send)
            self.dispatchers[name] = disp
            res = JsonResource(reactor, cors=False)
            mount_replication_server(res, disp, SECRET)
            self.listeners[name] = reactor.listenTCP(self.ports[name][1], make_site(res, reactor), interface="127.0.0.1")

    @defer.inlineCallbacks
    def tearDown(self):
        for listener in self.listeners.values():
            yield listener.stopListening()
        for client in self.clients:
            yield client.close()

    def rooms_owned_by(self, name, n=5):
        out = []
        i = 0
        while len(out) < n:
            room = f"!room{i}:hs"
            owner = "w1" if shard_for(room, 4) in (0, 1) else "w2"
            if owner == name:
                out.append(room)
            i += 1
        return out

    @defer.inlineCallbacks
    def test_local_and_forwarded(self):
        """A command runs on the owner whichever instance received it."""
        for room in self.rooms_owned_by("w2") + self.rooms_owned_by("w1"):
            owner = self.dispatchers["w1"].owner_of("events", room).name
            result = yield defer.ensureDeferred(self.dispatchers["w1"].run("send", room, {"room_id": room}))
            self.assertEqual(result, {"ran_on": owner, "room_id": room})
        self.assertEqual({n for n, _ in self.ran}, {"w1", "w2"})

    @defer.inlineCallbacks
    def test_owner_refusal_reaches_caller(self):
        """A Matrix error on the owner is raised unchanged at the forwarder."""
        room = self.rooms_owned_by("w2")[0]
        e = yield self.assertFailure(defer.ensureDeferred(self.dispatchers["w1"].run("send", room, {"room_id": room, "refuse": True})), MatrixError)
        self.assertEqual((e.code, e.errcode, e.msg), (403, "M_FORBIDDEN", "not allowed"))

    @defer.inlineCallbacks
    def test_wrong_shard_refused(self):
        """An owner refuses a forwarded command for a shard it does not own."""
        room = self.rooms_owned_by("w1")[0]
        e = yield self.assertFailure(
            defer.ensureDeferred(self.clients[0].call(self.config.instance("w2"), "send", "events", room, {"room_id": room})), MatrixError
        )
        self.assertEqual(e.code, 409)
        self.assertEqual(self.ran, [])

    @defer.inlineCallbacks
    def test_bad_secret_refused(self):
        """Requests without the shared secret are refused with 403."""
        url = self.config.instance("w2").replication_base + "/_estuary/replication/command/send"
        resp = yield treq.post(url, json={"key": "!a:hs", "args": {}}, headers={"Authorization": "Bearer wrong"}, persistent=False)
        body = yield treq.json_content(resp)
        self.assertEqual((resp.code, body["errcode"]), (403, "M_FORBIDDEN"))
        resp = yield treq.post(url, json={"key": "!a:hs", "args": {}}, persistent=False)
        yield treq.content(resp)
        self.assertEqual(resp.code, 403)
        self.assertEqual(self.ran, [])

    @defer.inlineCallbacks
    def test_owner_down_gives_503_after_retries(self):
        """When the owner does not answer, the caller gets 503 after bounded retries."""
        yield self.listeners["w2"].stopListening()
        room = self.rooms_owned_by("w2")[0]
        e = yield self.assertFailure(defer.ensureDeferred(self.dispatchers["w1"].run("send", room, {"room_id": room})), MatrixError)
        self.assertEqual(e.code, 503)
