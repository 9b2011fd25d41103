"""The spec checker used by every API test can fail (it is not a no-op)."""

from __future__ import annotations

from twisted.trial import unittest

from tests.utils.spec import check_exchange, find_operation


class SpecCheckerTests(unittest.SynchronousTestCase):
    def test_routes(self) -> None:
        """Paths map to their spec operation; r0 maps like v3; unknown paths to None."""
        self.assertEqual(find_operation("GET", "/_matrix/client/r0/account/whoami"), ("whoami.yaml", "/account/whoami"))
        self.assertIsNone(find_operation("GET", "/_synapse/admin/v1/register"))

    def test_bad_bodies_fail(self) -> None:
        """Wrong shapes, undocumented successes and malformed errors are caught."""
        check_exchange("GET", "/_matrix/client/v3/account/whoami", 200, {"user_id": "@a:b"})
        with self.assertRaises(AssertionError):
            check_exchange("GET", "/_matrix/client/v3/account/whoami", 200, {"user_id": 5})
        with self.assertRaises(AssertionError):
            check_exchange("GET", "/_matrix/client/v3/account/whoami", 201, {})
        with self.assertRaises(AssertionError):
            check_exchange("GET", "/_matrix/client/v3/account/whoami", 418, {"error": "no errcode"})
        with self.assertRaises(AssertionError):
            check_exchange("POST", "/_matrix/client/v3/register", 401, {"session": "s"})
