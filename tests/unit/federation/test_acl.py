"""Server ACL evaluation: the spec's order, globs, ports, IP literals, malformed content."""

from twisted.trial import unittest

from homeserver.federation.acl import ServerAcl, glob_to_regex, is_ip_literal, server_allowed, strip_port


class AclTests(unittest.TestCase):
    def test_no_acl_allows(self):
        """Without an m.room.server_acl event every server is allowed."""
        self.assertTrue(server_allowed(None, "anything.test"))

    def test_empty_allow_denies_everyone(self):
        """An ACL without allow denies every server, even with an empty deny."""
        self.assertFalse(server_allowed({}, "good.test"))
        self.assertFalse(server_allowed({"deny": []}, "good.test"))

    def test_deny_before_allow(self):
        """deny wins over allow; anything else that matches allow is allowed."""
        acl = {"allow": ["*"], "deny": ["evil.test", "*.evil.test"]}
        self.assertFalse(server_allowed(acl, "evil.test"))
        self.assertFalse(server_allowed(acl, "sub.evil.test"))
        self.assertTrue(server_allowed(acl, "notevil.test"))

    def test_port_ignored(self):
        """The server's port is not considered."""
        acl = {"allow": ["*"], "deny": ["evil.test"]}
        for name in ("evil.test:8448", "evil.test:1234"):
            self.assertFalse(server_allowed(acl, name))
        self.assertTrue(server_allowed({"allow": ["good.test"]}, "good.test:8448"))

    def test_globs(self):
        """* matches any run (also empty), ? exactly one character, case-insensitively."""
        acl = ServerAcl.from_content({"allow": ["matrix?.example.*"]})
        self.assertTrue(acl.is_allowed("matrix1.example.org"))
        self.assertTrue(acl.is_allowed("MATRIX2.Example.ORG"))
        self.assertFalse(acl.is_allowed("matrix.example.org"))
        self.assertFalse(acl.is_allowed("matrix12.example.org"))
        self.assertTrue(glob_to_regex("a*b").match("ab"))
        self.assertFalse(glob_to_regex("a.b").match("axb"))

    def test_ip_literals(self):
        """allow_ip_literals false denies v4 and v6 literals before allow is consulted."""
        acl = {"allow": ["*"], "allow_ip_literals": False}
        self.assertFalse(server_allowed(acl, "1.2.3.4"))
        self.assertFalse(server_allowed(acl, "1.2.3.4:8448"))
        self.assertFalse(server_allowed(acl, "[::1]:8448"))
        self.assertTrue(server_allowed(acl, "1.2.3.4.example"))
        self.assertTrue(server_allowed({"allow": ["*"]}, "1.2.3.4"))
        self.assertTrue(server_allowed({"allow": ["*"], "allow_ip_literals": "no"}, "[::1]"))

    def test_malformed_entries_ignored(self):
        """Non-list allow/deny count as empty; non-string entries are skipped."""
        self.assertTrue(server_allowed({"allow": ["*", 3], "deny": "evil.test"}, "evil.test"))
        self.assertFalse(server_allowed({"allow": "*"}, "good.test"))
        self.assertFalse(server_allowed({"allow": [None, "*"], "deny": [{"x": 1}, "bad*"]}, "bad.test"))

    def test_helpers(self):
        """Port stripping and IP literal detection."""
        self.assertEqual(strip_port("[::1]:8448"), "[::1]")
        self.assertEqual(strip_port("a.test:1"), "a.test")
        self.assertTrue(is_ip_literal("[2001:db8::1]"))
        self.assertFalse(is_ip_literal("example.org"))

    def test_ensure_server_allowed(self):
        """A denied server gets 403 M_FORBIDDEN; an allowed one passes."""
        from homeserver.errors import MatrixError
        from homeserver.federation.acl import ensure_server_allowed

        ensure_server_allowed({"allow": ["*"]}, "good.test", "!r:x")
        with self.assertRaises(MatrixError) as cm:
            ensure_server_allowed({"allow": ["*"], "deny": ["evil.test"]}, "evil.test:8448", "!r:x")
        self.assertEqual((cm.exception.code, cm.exception.errcode), (403, "M_FORBIDDEN"))
