"""Pure logic of the accounts area: config, ids, passwords, MAC, filters, UIA bodies."""

from __future__ import annotations

import hashlib
import hmac

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.config import ConfigError, load_config
from homeserver.config.accounts import AccountsConfig, PasswordPolicyConfig, RateLimit
from homeserver.errors import MatrixError
from homeserver.handlers.account_data import validate_filter
from homeserver.handlers.auth import Authenticator, hash_token
from homeserver.handlers.ids import check_localpart_for_registration, qualify_user_id
from homeserver.handlers.passwords import PasswordHasher, check_password_policy
from homeserver.handlers.profile import check_profile_key
from homeserver.handlers.register import shared_secret_mac
from homeserver.handlers.uia import AuthRequired
from storage.stores.accounts import AccessTokenRecord

BASE = {
    "server_name": "example.org",
    "replication": {"secret": "x" * 32},
    "instances": {"main": {"roles": ["client_writer"], "listen": "127.0.0.1:8100", "replication_listen": "127.0.0.1:9100"}},
}


class ConfigTests(unittest.SynchronousTestCase):
    def test_defaults(self) -> None:
        """Absent sections give the documented defaults."""
        config = AccountsConfig.from_homeserver_config(load_config(BASE))
        self.assertFalse(config.registration.enable_registration)
        self.assertEqual(config.password_policy.minimum_length, 8)
        self.assertIsNone(config.sessions.refresh_token_lifetime_ms)
        self.assertTrue(config.rate_limits.enabled)
        self.assertIsNone(config.well_known.client_base_url)

    def test_values_and_errors(self) -> None:
        """Values are read and typed; mistakes name the key path."""
        data = dict(BASE, registration={"enable_registration": True, "registration_shared_secret": "s" * 20},
                    rate_limits={"login_per_address": {"per_second": 2, "burst": 7}},
                    well_known={"client_base_url": "https://m.example.org"})
        config = AccountsConfig.from_homeserver_config(load_config(data))
        self.assertTrue(config.registration.enable_registration)
        self.assertEqual(config.rate_limits.login_per_address, RateLimit(2.0, 7))
        with self.assertRaises(ConfigError) as cm:
            load_config(dict(BASE, registration={"enable_registration": "yes"}))
        self.assertEqual(cm.exception.path, "registration.enable_registration")
        with self.assertRaises(ConfigError) as cm:
            load_config(dict(BASE, registration={"registration_shared_secret": "short"}))
        self.assertEqual(cm.exception.path, "registration.registration_shared_secret")
        with self.assertRaises(ConfigError) as cm:
            load_config(dict(BASE, rate_limits={"join_per_user": {"burst": 0}}))
        self.assertEqual(cm.exception.path, "rate_limits.join_per_user.burst")

    def test_documented_fragment_matches_defaults(self) -> None:
        """sample_config.yaml's account sections parse without unknown keys and document the real defaults."""
        import os

        import yaml

        from homeserver.config.accounts import ACCOUNT_SECTIONS

        path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "sample_config.yaml")
        with open(path, encoding="utf-8") as f:
            sample = yaml.safe_load(f)
        documented = {name: sample[name] for name in ACCOUNT_SECTIONS}
        loaded = load_config(dict(BASE, **documented))
        self.assertEqual(loaded.unknown_keys, ())
        self.assertEqual(AccountsConfig.from_homeserver_config(loaded), AccountsConfig.from_homeserver_config(load_config(BASE)))

    def test_unknown_keys_reported(self) -> None:
        """Typos inside account sections are reported as unknown keys."""
        config = load_config(dict(BASE, registration={"enable_registraton": True}, rate_limits={"login_per_address": {"brust": 2}}))
        self.assertIn("registration.enable_registraton", config.unknown_keys)
        self.assertIn("rate_limits.login_per_address.brust", config.unknown_keys)


class IdTests(unittest.SynchronousTestCase):
    def test_localparts(self) -> None:
        """Registration localparts follow Synapse's rules."""
        self.assertEqual(check_localpart_for_registration("a.b_c=d-e/f+g", "hs"), "@a.b_c=d-e/f+g:hs")
        for bad in ("", "A", "a b", "_x", "123", "é", "x" * 255):
            with self.assertRaises(MatrixError) as cm:
                check_localpart_for_registration(bad, "hs")
            self.assertEqual(cm.exception.errcode, "M_INVALID_USERNAME")

    def test_qualify(self) -> None:
        """Localparts and local ids qualify; other servers and junk do not."""
        self.assertEqual(qualify_user_id("alice", "hs"), "@alice:hs")
        self.assertEqual(qualify_user_id("@alice:hs", "hs"), "@alice:hs")
        self.assertIsNone(qualify_user_id("@alice:other", "hs"))
        self.assertIsNone(qualify_user_id("a:b", "hs"))
        self.assertIsNone(qualify_user_id("@:hs", "hs"))

    def test_profile_keys(self) -> None:
        """Profile keys follow the spec's grammar and 255-byte limit."""
        for ok in ("displayname", "avatar_url", "m.tz", "org.example.x_y"):
            check_profile_key(ok)
        for bad, code in (("Display", "M_INVALID_PARAM"), ("custom", "M_INVALID_PARAM"), ("a." + "b" * 300, "M_KEY_TOO_LARGE")):
            with self.assertRaises(MatrixError) as cm:
                check_profile_key(bad)
            self.assertEqual(cm.exception.errcode, code)


class PasswordTests(unittest.SynchronousTestCase):
    def test_policy(self) -> None:
        """Each rule is enforced only when enabled."""
        strict = PasswordPolicyConfig(minimum_length=4, require_digit=True, require_symbol=True, require_uppercase=True, require_lowercase=True)
        check_password_policy("Ab1!", strict)
        for bad in ("Ab1", "Abc!", "Ab1c", "ab1!", "AB1!"):
            with self.assertRaises(MatrixError) as cm:
                check_password_policy(bad, strict)
            self.assertEqual(cm.exception.errcode, "M_WEAK_PASSWORD")
        check_password_policy("x", PasswordPolicyConfig(enabled=False))
        with self.assertRaises(MatrixError):
            check_password_policy("x" * 1000, PasswordPolicyConfig(enabled=False))

    def test_hasher(self) -> None:
        """bcrypt hashes verify; wrong passwords, missing and corrupt hashes do not."""
        hasher = PasswordHasher(None, rounds=4, run_in_thread=lambda fn, *a: defer.succeed(fn(*a)))
        stored = self.successResultOf(defer.ensureDeferred(hasher.hash("pässword")))
        self.assertTrue(stored.startswith("$2"))
        self.assertTrue(self.successResultOf(defer.ensureDeferred(hasher.check("pässword", stored))))
        self.assertFalse(self.successResultOf(defer.ensureDeferred(hasher.check("password", stored))))
        self.assertFalse(self.successResultOf(defer.ensureDeferred(hasher.check("pässword", None))))
        self.assertFalse(self.successResultOf(defer.ensureDeferred(hasher.check("pässword", "garbage"))))


class SharedSecretMacTests(unittest.SynchronousTestCase):
    def test_mac_format(self) -> None:
        """The MAC is HMAC-SHA1 over NUL-joined fields, with the user type appended when given."""
        want = hmac.new(b"secret", b"n\x00u\x00p\x00admin", hashlib.sha1).hexdigest()
        self.assertEqual(shared_secret_mac("secret", "n", "u", "p", True), want)
        want = hmac.new(b"secret", b"n\x00u\x00p\x00notadmin\x00bot", hashlib.sha1).hexdigest()
        self.assertEqual(shared_secret_mac("secret", "n", "u", "p", False, "bot"), want)


class FilterValidationTests(unittest.SynchronousTestCase):
    def test_valid_and_invalid(self) -> None:
        """Known keys are type-checked; unknown keys pass."""
        validate_filter({})
        validate_filter({"room": {"timeline": {"limit": 5, "not_senders": ["@a:b"]}}, "future": 1})
        for bad in ({"account_data": {"limit": True}}, {"room": {"include_leave": "no"}}, {"room": {"ephemeral": []}}):
            with self.assertRaises(MatrixError):
                validate_filter(bad)


class UiaBodyTests(unittest.SynchronousTestCase):
    def test_body_shape(self) -> None:
        """The 401 body has flows/params/session, completed when any, errcode only on failure."""
        plain = AuthRequired([["m.login.dummy"]], "S", [])
        self.assertEqual(plain.to_json(), {"flows": [{"stages": ["m.login.dummy"]}], "params": {}, "session": "S"})
        self.assertEqual(plain.code, 401)
        failed = AuthRequired([["m.login.password"]], "S", ["m.login.dummy"], errcode="M_FORBIDDEN", error="no")
        self.assertEqual(failed.to_json()["errcode"], "M_FORBIDDEN")
        self.assertEqual(failed.to_json()["completed"], ["m.login.dummy"])


class FakeAccounts:
    def __init__(self) -> None:
        self.lookups = 0
        self.records: dict[bytes, AccessTokenRecord] = {}

    def get_access_token(self, h):
        self.lookups += 1
        return defer.succeed(self.records.get(h))

    def mark_access_token_used(self, token_id, refresh_id):
        return defer.succeed(None)


class AuthenticatorTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = FakeAccounts()
        self.auth = Authenticator(self.clock, self.store, cache_ms=2000)

    def add(self, token: str, **kw) -> None:
        base = dict(token_id=1, user_id="@a:hs", device_id="D", valid_until_ms=None, refresh_token_id=None,
                    used=False, is_guest=False, is_admin=False, deactivated=False)
        base.update(kw)
        self.store.records[hash_token(token)] = AccessTokenRecord(**base)

    def authenticate(self, token: str, allow_guest: bool = False):
        return defer.ensureDeferred(self.auth.get_user_by_access_token(token, allow_guest=allow_guest))

    def test_cache(self) -> None:
        """A validated token is served from memory until the cache lifetime ends or it is invalidated."""
        self.add("t")
        for _ in range(3):
            self.assertEqual(self.successResultOf(self.authenticate("t")).user_id, "@a:hs")
        self.assertEqual(self.store.lookups, 1)
        self.clock.advance(2.1)
        self.successResultOf(self.authenticate("t"))
        self.assertEqual(self.store.lookups, 2)
        self.auth.invalidate_user("@a:hs")
        self.successResultOf(self.authenticate("t"))
        self.assertEqual(self.store.lookups, 3)

    def test_refusals(self) -> None:
        """Unknown, expired (soft logout), guest-where-not-allowed and deactivated tokens are refused."""
        self.add("expired", valid_until_ms=999_000)
        self.add("guest", is_guest=True)
        self.add("gone", deactivated=True)
        for token, code, errcode, soft in (("nope", 401, "M_UNKNOWN_TOKEN", False), ("expired", 401, "M_UNKNOWN_TOKEN", True),
                                           ("guest", 403, "M_GUEST_ACCESS_FORBIDDEN", None), ("gone", 401, "M_UNKNOWN_TOKEN", False)):
            err = self.failureResultOf(self.authenticate(token), MatrixError).value
            self.assertEqual((err.code, err.errcode), (code, errcode))
            if soft is not None:
                self.assertIs(err.to_json()["soft_logout"], soft)
        self.assertTrue(self.successResultOf(self.authenticate("guest", allow_guest=True)).is_guest)

    def test_get_user_by_req_reads_through_the_edge(self) -> None:
        """Requests are read only through the injected credentials reader."""
        from homeserver.handlers.auth import RequestCredentials

        seen = []

        class Store(FakeAccounts):
            def record_device_seen(self, *args):
                seen.append(args)
                return defer.succeed(None)

        store = Store()
        store.records = self.store.records
        auth = Authenticator(self.clock, store, credentials_of=lambda req: RequestCredentials(req.get("token"), "1.2.3.4", "ua"))
        self.add("t")
        err = self.failureResultOf(defer.ensureDeferred(auth.get_user_by_req({})), MatrixError).value
        self.assertEqual(err.errcode, "M_MISSING_TOKEN")
        self.assertEqual(self.successResultOf(defer.ensureDeferred(auth.get_user_by_req({"token": "t"}))).device_id, "D")
        self.assertEqual(seen, [("@a:hs", "D", "1.2.3.4", "ua", 1000000)])
