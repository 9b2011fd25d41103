"""The admin API on an instance that holds only the ``admin`` role (it owns no shard),
driven over HTTP and, when installed, by the real ``synadm`` CLI.

Writes made there must reach the other processes: a display name set by the
admin is re-sent as member events by the rooms' shard owner; a deactivated
user's token stops working on the reader and the user leaves their rooms.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import quote

import treq
import yaml
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import Stack
from tests.utils.wait import wait_until
from workers.register_user import register_user

LAYOUT = {
    "writer": {"roles": ["client_writer", "federation_sender", "pusher", "background"]},
    "reader": {"roles": ["client_reader", "federation_inbound", "media"]},
    "sync": {"roles": ["sync"]},
    "admin": {"roles": ["admin"]},
}

HAVE_SYNADM = importlib.util.find_spec("synadm") is not None


def _thread(fn: Any, *args: Any) -> defer.Deferred:
    return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.to_thread(fn, *args)))


class AdminApiStackTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.stack = Stack(self, reactor, LAYOUT)
        yield self.stack.start()
        self.root = yield _thread(register_user, self.stack.base, "e2e-shared-secret", "root", "root password 1", True)
        self.alice = yield self.register("alice")
        self.bob = yield self.register("bob")
        code, body = yield self.call("POST", "/_matrix/client/v3/createRoom", self.alice["access_token"],
                                     {"name": "Lounge", "preset": "public_chat"})
        self.assertEqual(code, 200, body)
        self.room = body["room_id"]
        code, body = yield self.call("POST", f"/_matrix/client/v3/join/{self.room}", self.bob["access_token"], {})
        self.assertEqual(code, 200, body)

    @defer.inlineCallbacks
    def register(self, name):
        code, body = yield self.call("POST", "/_matrix/client/v3/register", None,
                                     {"username": name, "password": f"{name} password 1", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, body)
        return body

    @defer.inlineCallbacks
    def call(self, method, path, token=None, body=None, base=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = yield treq.request(method, (base or self.stack.base) + path, json=body, headers=headers, persistent=False)
        data = yield treq.json_content(resp)
        return resp.code, data

    @defer.inlineCallbacks
    def test_writes_from_the_admin_instance_reach_the_shard_owners(self):
        """Display name and deactivation made on the admin-only instance take effect everywhere."""
        admin_token = self.root["access_token"]
        alice_id = self.alice["user_id"]
        code, body = yield self.call("PUT", f"/_synapse/admin/v2/users/{quote(alice_id)}", admin_token,
                                     {"displayname": "Alice Cooper"})
        self.assertEqual((code, body.get("displayname")), (200, "Alice Cooper"), body)

        member_path = f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/{quote(alice_id)}"

        @defer.inlineCallbacks
        def renamed():
            code, member = yield self.call("GET", member_path, self.bob["access_token"])
            return code == 200 and member.get("displayname") == "Alice Cooper"

        yield wait_until(reactor, renamed, timeout=30, what="member event re-sent by the room's owner")

        # The reader (another process) has alice's token in its cache...
        whoami = "/_matrix/client/v3/account/whoami"
        code, body = yield self.call("GET", whoami, self.alice["access_token"], base=self.stack.instance_base("reader"))
        self.assertEqual(code, 200, body)
        code, body = yield self.call("POST", f"/_synapse/admin/v1/deactivate/{quote(alice_id)}", admin_token, {})
        self.assertEqual(code, 200, body)

        # ...and refuses it once the deactivation's invalidation arrives over the caches stream.
        @defer.inlineCallbacks
        def refused():
            code, body = yield self.call("GET", whoami, self.alice["access_token"], base=self.stack.instance_base("reader"))
            return (code, body.get("errcode")) == (401, "M_UNKNOWN_TOKEN")

        yield wait_until(reactor, refused, timeout=10, what="token refused on the reader")

        @defer.inlineCallbacks
        def parted():
            code, body = yield self.call("GET", f"/_synapse/admin/v1/rooms/{self.room}/members", admin_token)
            return code == 200 and body["members"] == [self.bob["user_id"]]

        yield wait_until(reactor, parted, timeout=30, what="deactivated user left the room")
        code, body = yield self.call("GET", member_path, self.bob["access_token"])
        self.assertEqual((code, body.get("membership")), (200, "leave"))

        # Non-admins are refused on the admin instance.
        code, body = yield self.call("GET", "/_synapse/admin/v2/users", self.bob["access_token"])
        self.assertEqual((code, body.get("errcode")), (403, "M_FORBIDDEN"))

    @defer.inlineCallbacks
    def test_synadm(self):
        """``synadm user list``, ``user details`` and ``room list`` against the stack."""
        if not HAVE_SYNADM:
            raise unittest.SkipTest("synadm is not installed")
        home = tempfile.mkdtemp(prefix="synadm-home-")
        config = os.path.join(home, "synadm.yaml")
        with open(config, "w") as f:
            yaml.safe_dump({
                "user": "@root:localhost", "token": self.root["access_token"], "protocol": "http",
                "base_url": self.stack.base, "admin_path": "/_synapse/admin", "matrix_path": "/_matrix",
                "timeout": 30, "server_discovery": "well-known", "homeserver": "localhost", "ssl_verify": False,
                "format": "json",
            }, f)

        def synadm(*args):
            env = dict(os.environ, HOME=home)
            done = subprocess.run([sys.executable, "-m", "synadm", "-c", config, "-o", "json", *args],
                                  capture_output=True, text=True, timeout=60, env=env)
            self.assertEqual(done.returncode, 0, done.stderr)
            return json.loads(done.stdout)

        users = yield _thread(synadm, "user", "list")
        self.assertEqual(sorted(u["name"] for u in users["users"]),
                         ["@alice:localhost", "@bob:localhost", "@root:localhost"])
        self.assertEqual(users["total"], 3)
        details = yield _thread(synadm, "user", "details", "@alice:localhost")
        self.assertEqual((details["name"], details["displayname"], details["admin"]), ("@alice:localhost", "alice", False))
        rooms = yield _thread(synadm, "room", "list")
        self.assertEqual([(r["room_id"], r["name"], r["joined_members"]) for r in rooms["rooms"]],
                         [(self.room, "Lounge", 2)])
        version = yield _thread(synadm, "version")
        self.assertIn("server_version", version)
