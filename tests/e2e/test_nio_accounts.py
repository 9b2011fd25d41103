"""matrix-nio (a real client library) against a running stack: accounts.

Registration (user-interactive, m.login.dummy) → login → refresh → whoami →
logout, through the router of a real multi-process stack.
"""

import asyncio
import json

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import Stack, layout_three

try:
    import nio
except ImportError:  # pragma: no cover - the test extra installs it
    nio = None


def as_deferred(coro):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


class NioAccountsTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")

    @defer.inlineCallbacks
    def test_register_login_refresh_whoami_logout(self):
        """The full account lifecycle works with nio, through the router."""
        stack = Stack(self, reactor, layout_three(None))
        try:
            yield stack.start()
        except Exception:
            self.fail("stack did not become ready:\n" + stack.log()[-4000:])

        client = nio.AsyncClient(stack.base, "alice")
        self.addCleanup(lambda: as_deferred(client.close()))

        resp = yield as_deferred(client.register("alice", "a long enough password 1", device_name="nio"))
        self.assertIsInstance(resp, nio.RegisterResponse, str(resp))
        self.assertEqual(resp.user_id, "@alice:localhost")

        # A fresh client logs in with the password.
        c2 = nio.AsyncClient(stack.base, "@alice:localhost")
        self.addCleanup(lambda: as_deferred(c2.close()))
        login = yield as_deferred(c2.login("a long enough password 1", device_name="second"))
        self.assertIsInstance(login, nio.LoginResponse, str(login))
        who = yield as_deferred(c2.whoami())
        self.assertIsInstance(who, nio.WhoamiResponse, str(who))
        self.assertEqual((who.user_id, who.device_id), ("@alice:localhost", login.device_id))

        # Wrong password is refused with the spec's error.
        c3 = nio.AsyncClient(stack.base, "alice")
        self.addCleanup(lambda: as_deferred(c3.close()))
        bad = yield as_deferred(c3.login("wrong password"))
        self.assertIsInstance(bad, nio.LoginError)
        self.assertEqual(bad.status_code, "M_FORBIDDEN")

        # Refresh tokens (nio has no helper: its raw send keeps nio's HTTP stack).
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "a long enough password 1", "refresh_token": True}
        raw = yield as_deferred(c3.send("POST", "/_matrix/client/v3/login", json.dumps(body), headers={"Content-Type": "application/json"}))
        data = yield as_deferred(raw.json())
        self.assertEqual(raw.status, 200, data)
        self.assertIn("refresh_token", data)
        self.assertIn("expires_in_ms", data)
        raw = yield as_deferred(c3.send("POST", "/_matrix/client/v3/refresh", json.dumps({"refresh_token": data["refresh_token"]}), headers={"Content-Type": "application/json"}))
        refreshed = yield as_deferred(raw.json())
        self.assertEqual(raw.status, 200, refreshed)
        self.assertNotEqual(refreshed["access_token"], data["access_token"])
        c3.access_token = refreshed["access_token"]
        c3.user_id = data["user_id"]
        who = yield as_deferred(c3.whoami())
        self.assertEqual(who.user_id, "@alice:localhost")
        # The old refresh token is single use.
        raw = yield as_deferred(c3.send("POST", "/_matrix/client/v3/refresh", json.dumps({"refresh_token": data["refresh_token"]}), headers={"Content-Type": "application/json"}))
        self.assertEqual(raw.status, 401)

        # Logout invalidates the token.
        out = yield as_deferred(c2.logout())
        self.assertIsInstance(out, nio.LogoutResponse, str(out))
        c2.access_token = login.access_token
        who = yield as_deferred(c2.whoami())
        self.assertIsInstance(who, nio.WhoamiError)
        self.assertEqual(who.status_code, "M_UNKNOWN_TOKEN")


class RegisterUserCommandTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        if nio is None:
            raise unittest.SkipTest("matrix-nio is not installed")

    @defer.inlineCallbacks
    def test_register_admin_then_login(self):
        """`estuary register-user` creates an admin through the running stack; a wrong secret is refused."""
        import os
        import subprocess
        import sys

        from tests.e2e.stack import ROOT

        stack = Stack(self, reactor, layout_three(None), extra_config={"registration": {"enable_registration": False, "registration_shared_secret": "operator-secret-0123456789"}})
        yield stack.start()
        env = dict(os.environ, PYTHONPATH=ROOT)
        cmd = [sys.executable, "-m", "workers", "register-user", "--config", stack.config_path, "--user", "root", "--password", "pw for the admin 1", "--admin"]
        result = yield defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, env=env, timeout=60)))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("registered @root:localhost (admin)", result.stdout)

        bad = yield defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.to_thread(subprocess.run, cmd[:-5] + ["--user", "eve", "--password", "x" * 12, "--shared-secret", "wrong-secret-0123456789"], capture_output=True, text=True, env=env, timeout=60)))
        self.assertEqual(bad.returncode, 1)
        self.assertIn("registration refused (403)", bad.stderr)

        client = nio.AsyncClient(stack.base, "root")
        self.addCleanup(lambda: as_deferred(client.close()))
        login = yield as_deferred(client.login("pw for the admin 1"))
        self.assertIsInstance(login, nio.LoginResponse, str(login))
