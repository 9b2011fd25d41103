"""Synapse's own operator tool works against Estuary's shared-secret registration.

Runs ``register_new_matrix_user`` (from a Synapse install, found through
``ESTUARY_SYNAPSE_VENV``, default ``/work/synapse-venv``) against the
accounts API listening on a real local port. Skipped when Synapse is not
installed.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.utils.client import ApiTestCase

VENV = os.environ.get("ESTUARY_SYNAPSE_VENV", "/work/synapse-venv")
TOOL = os.path.join(VENV, "bin", "register_new_matrix_user")
SECRET = "bootstrap-secret-0123456789"


class RegisterNewMatrixUserTests(ApiTestCase):
    registration = {"enable_registration": False, "registration_shared_secret": SECRET}
    if not os.path.exists(TOOL):
        skip = f"Synapse's register_new_matrix_user not found at {TOOL}"

    async def test_bootstrap_admin(self) -> None:
        """The tool creates an admin, whose password then logs in; a second run reports the user exists."""
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        args = ["-u", "root", "-p", "a long admin password", "-a", "-k", SECRET, url]
        out, err, code = await getProcessOutputAndValue(TOOL, args, env=dict(os.environ))
        self.assertEqual(code, 0, (out, err))
        self.assertIn(b"Success", out + err)

        login = await self.login("root", "a long admin password")
        resp = await self.request("GET", "/_synapse/admin/v1/registration_tokens", token=login["access_token"])
        self.assertEqual(resp.code, 200)  # the account is an admin

        out, err, code = await getProcessOutputAndValue(TOOL, args, env=dict(os.environ))
        self.assertNotEqual(code, 0)
        self.assertIn(b"User ID already taken", out + err)
