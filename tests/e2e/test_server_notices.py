"""Server notices through a running stack (admin API, notices room, leave refusal)."""

import asyncio

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import Stack, layout_three
from workers.register_user import register_user


class ServerNoticesTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_notice_reaches_user_who_cannot_leave(self):
        """An admin's notice arrives in a tagged room from the system user; the user cannot leave it."""
        stack = Stack(self, reactor, layout_three(None), extra_config={"server_notices": {"system_mxid_localpart": "notices"}})
        yield stack.start()

        def call(method, path, token=None, body=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}

            @defer.inlineCallbacks
            def go():
                resp = yield treq.request(method, stack.base + path, json=body, headers=headers, persistent=False)
                data = yield treq.json_content(resp)
                return resp.code, data

            return go()

        admin = yield defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.to_thread(
            register_user, stack.base, "e2e-shared-secret", "root", "root password 1", True)))
        code, bob = yield call("POST", "/_matrix/client/v3/register", body={"username": "bob", "password": "bob password 1", "auth": {"type": "m.login.dummy"}})
        self.assertEqual(code, 200, bob)

        # Refusals: not an admin; malformed bodies; remote user.
        code, body = yield call("POST", "/_synapse/admin/v1/send_server_notice", bob["access_token"], {"user_id": bob["user_id"], "content": {"msgtype": "m.text", "body": "x"}})
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
        code, body = yield call("POST", "/_synapse/admin/v1/send_server_notice", admin["access_token"], {"user_id": bob["user_id"]})
        self.assertEqual((code, body["errcode"]), (400, "M_MISSING_PARAM"))
        code, body = yield call("POST", "/_synapse/admin/v1/send_server_notice", admin["access_token"], {"user_id": "@x:elsewhere", "content": {"body": "x"}})
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))

        code, sent = yield call("PUT", "/_synapse/admin/v1/send_server_notice/n1", admin["access_token"], {"user_id": bob["user_id"], "content": {"msgtype": "m.server_notice", "body": "maintenance tonight"}})
        self.assertEqual(code, 200, sent)
        # Retried with the same transaction ID: the same event.
        code, again = yield call("PUT", "/_synapse/admin/v1/send_server_notice/n1", admin["access_token"], {"user_id": bob["user_id"], "content": {"msgtype": "m.server_notice", "body": "maintenance tonight"}})
        self.assertEqual((code, again["event_id"]), (200, sent["event_id"]))

        code, sync = yield call("GET", "/_matrix/client/v3/sync?timeout=0", bob["access_token"])
        self.assertEqual(code, 200)
        (room_id, invite), = sync["rooms"]["invite"].items()
        inviter = [e for e in invite["invite_state"]["events"] if e["type"] == "m.room.member" and e["state_key"] == bob["user_id"]][0]
        self.assertEqual(inviter["sender"], "@notices:localhost")
        code, tags = yield call("GET", f"/_matrix/client/v3/user/{bob['user_id']}/rooms/{room_id}/tags", bob["access_token"])
        self.assertIn("m.server_notice", tags["tags"])

        code, _ = yield call("POST", f"/_matrix/client/v3/join/{room_id}", bob["access_token"], {})
        self.assertEqual(code, 200)
        code, msgs = yield call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20", bob["access_token"])
        bodies = [e["content"].get("body") for e in msgs["chunk"] if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["maintenance tonight"])

        code, body = yield call("POST", f"/_matrix/client/v3/rooms/{room_id}/leave", bob["access_token"], {})
        self.assertEqual((code, body["errcode"]), (403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"))
