"""User-interactive auth logic against an in-memory session store."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.errors import MatrixError
from homeserver.handlers.uia import AuthRequired, UserInteractiveAuth
from storage.stores.registration import UiaSession


class MemorySessions:
    """The registration store's UIA methods, in memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.tokens = {"good": 1}

    def create_uia_session(self, sid, operation, user_id, params, now, expire_before):
        self.sessions = {k: v for k, v in self.sessions.items() if v["created"] >= expire_before}
        self.sessions[sid] = {"created": now, "operation": operation, "user_id": user_id, "params": params, "completed": {}, "token": None}
        return defer.succeed(None)

    def get_uia_session(self, sid) -> "defer.Deferred[Optional[UiaSession]]":
        s = self.sessions.get(sid)
        if s is None:
            return defer.succeed(None)
        return defer.succeed(UiaSession(sid, s["created"], s["operation"], s["user_id"], s["params"], s["token"], dict(s["completed"])))

    def mark_stage_completed(self, sid, stage, result):
        if sid not in self.sessions:
            return defer.succeed(False)
        self.sessions[sid]["completed"][stage] = result
        return defer.succeed(True)

    def reserve_registration_token(self, sid, token, now):
        if sid not in self.sessions or self.tokens.get(token, 0) < 1:
            return defer.succeed(False)
        self.tokens[token] -= 1
        self.sessions[sid]["token"] = token
        self.sessions[sid]["completed"]["m.login.registration_token"] = token
        return defer.succeed(True)

    def delete_uia_session(self, sid):
        self.sessions.pop(sid, None)
        return defer.succeed(None)


class UiaTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemorySessions()

        async def check_password(user_id: str, password: str) -> bool:
            return (user_id, password) == ("@a:hs", "pw")

        self.uia = UserInteractiveAuth(self.clock, self.store, check_password, session_lifetime_ms=60_000)

    def check(self, auth: Any, operation: str = "op", flows=(("m.login.password",),), user_id: Optional[str] = "@a:hs", params=None):
        return defer.ensureDeferred(self.uia.check(operation, [list(f) for f in flows], auth, user_id, "hs", params=params))

    def required(self, d) -> AuthRequired:
        return self.failureResultOf(d, AuthRequired).value

    def test_first_request_starts_session(self) -> None:
        """No auth: 401 with flows and a fresh session, no errcode."""
        err = self.required(self.check(None))
        body = err.to_json()
        self.assertNotIn("errcode", body)
        self.assertIn(body["session"], self.store.sessions)

    def test_password_stage(self) -> None:
        """The right password completes; a wrong one or another user's id fails with M_FORBIDDEN."""
        sid = self.required(self.check(None)).to_json()["session"]
        err = self.required(self.check({"type": "m.login.password", "password": "nope", "session": sid}))
        self.assertEqual(err.to_json()["errcode"], "M_FORBIDDEN")
        err = self.required(self.check({"type": "m.login.password", "password": "pw", "user": "b", "session": sid}))
        self.assertEqual(err.to_json()["errcode"], "M_FORBIDDEN")
        sid2, completed = self.successResultOf(self.check({"type": "m.login.password", "password": "pw",
                                                           "identifier": {"type": "m.id.user", "user": "A"}, "session": sid}))
        self.assertEqual((sid2, completed), (sid, {"m.login.password": "@a:hs"}))

    def test_stage_in_first_request(self) -> None:
        """A stage may be completed without a prior 401."""
        sid, completed = self.successResultOf(self.check({"type": "m.login.password", "password": "pw"}))
        self.assertIn(sid, self.store.sessions)

    def test_multi_stage_flow(self) -> None:
        """A two-stage flow reports completed stages until both are done."""
        flows = (("m.login.registration_token", "m.login.dummy"),)
        err = self.required(self.check({"type": "m.login.dummy"}, flows=flows, user_id=None))
        body = err.to_json()
        self.assertEqual(body["completed"], ["m.login.dummy"])
        sid, completed = self.successResultOf(
            self.check({"type": "m.login.registration_token", "token": "good", "session": body["session"]}, flows=flows, user_id=None)
        )
        self.assertEqual(set(completed), {"m.login.dummy", "m.login.registration_token"})

    def test_session_binding(self) -> None:
        """A session cannot be used for another operation, user or params."""
        sid = self.required(self.check(None, params={"devices": ["A"]})).to_json()["session"]
        for kwargs in ({"operation": "other", "params": {"devices": ["A"]}}, {"user_id": "@b:hs", "params": {"devices": ["A"]}},
                       {"params": {"devices": ["B"]}}):
            err = self.failureResultOf(self.check({"type": "m.login.password", "password": "pw", "session": sid}, **kwargs), MatrixError).value
            self.assertEqual((err.code, err.errcode), (403, "M_FORBIDDEN"))

    def test_expiry_and_unknown(self) -> None:
        """Expired and unknown sessions are refused."""
        sid = self.required(self.check(None)).to_json()["session"]
        self.clock.advance(61)
        for s in (sid, "nope"):
            err = self.failureResultOf(self.check({"type": "m.login.password", "password": "pw", "session": s}), MatrixError).value
            self.assertEqual(err.code, 400)

    def test_malformed_auth(self) -> None:
        """Wrongly typed auth fields are M_BAD_JSON; unoffered stages get the 401 with an error."""
        for auth in ("x", {"session": 5}, {"type": 5}, {"type": "m.login.password", "password": 1}):
            err = self.failureResultOf(self.check(auth), MatrixError).value
            self.assertEqual((err.code, err.errcode), (400, "M_BAD_JSON"))
        err = self.required(self.check({"type": "m.login.dummy"}))
        self.assertEqual(err.to_json()["errcode"], "M_UNRECOGNIZED")
