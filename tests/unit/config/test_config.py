"""Tests for config parsing and validation."""

import copy

from twisted.trial import unittest

from homeserver.config import ConfigError, load_config

BASE = {
    "server_name": "example.org",
    "replication": {"secret": "x" * 32},
    "instances": {
        "main": {
            "roles": ["client_reader", "client_writer", "sync", "background"],
            "listen": "127.0.0.1:8081",
            "replication_listen": "127.0.0.1:9081",
        }
    },
}


def two_writers(**over):
    cfg = copy.deepcopy(BASE)
    cfg["streams"] = {"events": 4, "receipts": 2}
    cfg["instances"] = {
        "w1": {
            "roles": ["client_writer"],
            "listen": "127.0.0.1:8081",
            "replication_listen": "127.0.0.1:9081",
            "shards": "all",
        },
    }
    cfg.update(over)
    return cfg


class ConfigTests(unittest.TestCase):
    def load(self, data):
        return load_config(data, env={})

    def assertConfigError(self, data, path):
        e = self.assertRaises(ConfigError, self.load, data)
        self.assertEqual(e.path, path, str(e))
        return e

    def test_minimal_single_process(self):
        """A lone writer naming no shards owns every shard of every stream."""
        cfg = self.load(BASE)
        self.assertEqual(cfg.server_name, "example.org")
        main = cfg.instance("main")
        self.assertEqual(main.shards["events"], frozenset(range(16)))
        self.assertIs(cfg.shard_owner("events", 15), main)
        self.assertEqual(cfg.database.dsn, None)
        self.assertEqual(cfg.router.listen, ("127.0.0.1", 8008))
        self.assertEqual(cfg.unknown_keys, ())

    def test_trusted_proxies(self):
        """router.trusted_proxies: loopback by default, else the listed networks; junk refused."""
        import ipaddress

        cfg = self.load(BASE)
        self.assertIn(ipaddress.ip_address("127.0.0.1"), cfg.router.trusted_proxies[0])
        data = copy.deepcopy(BASE)
        data["router"] = {"trusted_proxies": ["10.1.0.0/16", "192.0.2.7"]}
        self.assertEqual([str(n) for n in self.load(data).router.trusted_proxies], ["10.1.0.0/16", "192.0.2.7/32"])
        data["router"] = {"trusted_proxies": ["not a network"]}
        self.assertConfigError(data, "router.trusted_proxies")

    def test_unknown_keys_are_collected(self):
        """Typos are reported with their key path, not fatal."""
        data = copy.deepcopy(BASE)
        data["sever_name"] = "typo"
        data["instances"]["main"]["listn"] = "x"
        cfg = self.load(data)
        self.assertEqual(sorted(cfg.unknown_keys), ["instances.main.listn", "sever_name"])

    def test_bad_listen_names_key(self):
        """A malformed listener names instances.<name>.listen."""
        data = copy.deepcopy(BASE)
        data["instances"]["main"]["listen"] = "localhost"
        e = self.assertConfigError(data, "instances.main.listen")
        self.assertIn("expected host:port", str(e))

    def test_ipv6_listen(self):
        """Bracketed IPv6 listeners parse."""
        data = copy.deepcopy(BASE)
        data["instances"]["main"]["listen"] = "[::1]:8081"
        self.assertEqual(self.load(data).instance("main").listen, ("::1", 8081))
        self.assertEqual(self.load(data).instance("main").http_base, "http://[::1]:8081")

    def test_unknown_role(self):
        """Roles are checked against the registry."""
        data = copy.deepcopy(BASE)
        data["instances"]["main"]["roles"] = ["client_writer", "syncer"]
        self.assertConfigError(data, "instances.main.roles")

    def test_missing_server_name(self):
        """server_name is required."""
        data = copy.deepcopy(BASE)
        del data["server_name"]
        self.assertConfigError(data, "server_name")

    def test_short_secret_refused(self):
        """The replication secret must be long enough."""
        data = copy.deepcopy(BASE)
        data["replication"]["secret"] = "short"
        self.assertConfigError(data, "replication.secret")

    def test_secret_from_environment(self):
        """The replication secret may come from the environment."""
        data = copy.deepcopy(BASE)
        del data["replication"]
        cfg = load_config(data, env={"ESTUARY_REPLICATION_SECRET": "y" * 20})
        self.assertEqual(cfg.replication_secret, "y" * 20)

    def test_split_shards(self):
        """Shards split between writers by ranges and lists."""
        data = two_writers()
        data["instances"]["w1"]["shards"] = {"events": "0-1", "receipts": [0]}
        data["instances"]["w2"] = {
            "roles": ["client_writer"],
            "listen": "127.0.0.1:8082",
            "replication_listen": "127.0.0.1:9082",
            "shards": {"events": ["2-3"], "receipts": 1, **{s: "all" for s in ("typing", "presence", "to_device", "account_data", "device_lists", "push_rules")}},
        }
        cfg = self.load(data)
        self.assertEqual(cfg.shard_owner("events", 1).name, "w1")
        self.assertEqual(cfg.shard_owner("events", 3).name, "w2")
        self.assertEqual(cfg.shard_owner("receipts", 1).name, "w2")

    def test_unowned_shard_refused(self):
        """A shard nobody owns is refused, naming the stream."""
        data = two_writers()
        data["instances"]["w1"]["shards"] = {"events": "0-2"}
        data["instances"]["w2"] = {
            "roles": ["client_writer"],
            "listen": "127.0.0.1:8082",
            "replication_listen": "127.0.0.1:9082",
            "shards": {"receipts": "all"},
        }
        e = self.assertConfigError(data, "streams.events")
        self.assertIn("shard 3 has no owner", str(e))

    def test_doubly_owned_shard_refused(self):
        """Two owners of one shard is refused."""
        data = two_writers()
        data["instances"]["w2"] = {
            "roles": ["client_writer"],
            "listen": "127.0.0.1:8082",
            "replication_listen": "127.0.0.1:9082",
            "shards": {"events": [3]},
        }
        self.assertConfigError(data, "instances.w2.shards.events")

    def test_shard_out_of_range(self):
        """Shard numbers beyond the stream's count are refused."""
        data = two_writers()
        data["instances"]["w1"]["shards"] = {"events": "0-4"}
        self.assertConfigError(data, "instances.w1.shards.events")

    def test_shards_only_on_writers(self):
        """Only client_writer instances may own shards."""
        data = copy.deepcopy(BASE)
        data["instances"]["r"] = {
            "roles": ["sync"],
            "listen": "127.0.0.1:8082",
            "replication_listen": "127.0.0.1:9082",
            "shards": "all",
        }
        self.assertConfigError(data, "instances.r.shards")

    def test_no_writer_refused(self):
        """A deployment needs a client_writer."""
        data = copy.deepcopy(BASE)
        data["instances"]["main"]["roles"] = ["sync"]
        self.assertConfigError(data, "instances")

    def test_port_clash_refused(self):
        """Two listeners on one address are refused."""
        data = copy.deepcopy(BASE)
        data["instances"]["main"]["replication_listen"] = "127.0.0.1:8081"
        self.assertConfigError(data, "instances.main.replication_listen")

    def test_wrong_types(self):
        """Wrong value types name the key."""
        data = copy.deepcopy(BASE)
        data["database"] = {"pool_size": "ten"}
        self.assertConfigError(data, "database.pool_size")
        data = copy.deepcopy(BASE)
        data["instances"] = []
        self.assertConfigError(data, "instances")

    def test_prepared_statements_switch(self):
        """database.prepared_statements defaults to on, can be turned off, and must be a boolean."""
        self.assertTrue(self.load(copy.deepcopy(BASE)).database.prepared_statements)
        data = copy.deepcopy(BASE)
        data["database"] = {"prepared_statements": False}
        self.assertFalse(self.load(data).database.prepared_statements)
        data["database"] = {"prepared_statements": "no"}
        self.assertConfigError(data, "database.prepared_statements")


class SyncSectionTests(unittest.TestCase):
    """``sync.wake_batch_ms``."""

    def test_default_and_value(self):
        """Absent: the default window; set: that many milliseconds."""
        from homeserver.config.sync import DEFAULT_WAKE_BATCH_MS

        self.assertEqual(load_config(copy.deepcopy(BASE), env={}).sections["sync"].wake_batch_ms, DEFAULT_WAKE_BATCH_MS)
        cfg = copy.deepcopy(BASE)
        cfg["sync"] = {"wake_batch_ms": 0}
        self.assertEqual(load_config(cfg, env={}).sections["sync"].wake_batch_ms, 0)

    def test_bad_values_refused(self):
        """Negative, too large or non-integer windows are refused with the key's path."""
        for bad in (-1, 1001, "10", 2.5):
            cfg = copy.deepcopy(BASE)
            cfg["sync"] = {"wake_batch_ms": bad}
            e = self.assertRaises(ConfigError, load_config, cfg, env={})
            self.assertEqual(e.path, "sync.wake_batch_ms", str(e))

    def test_min_interval(self):
        """``sync.min_interval_ms``: default, a value, and refusals with the key's path."""
        from homeserver.config.sync import DEFAULT_MIN_INTERVAL_MS

        self.assertEqual(load_config(copy.deepcopy(BASE), env={}).sections["sync"].min_interval_ms, DEFAULT_MIN_INTERVAL_MS)
        cfg = copy.deepcopy(BASE)
        cfg["sync"] = {"min_interval_ms": 0}
        self.assertEqual(load_config(cfg, env={}).sections["sync"].min_interval_ms, 0)
        for bad in (-1, 5001, "100", 2.5):
            cfg = copy.deepcopy(BASE)
            cfg["sync"] = {"min_interval_ms": bad}
            e = self.assertRaises(ConfigError, load_config, cfg, env={})
            self.assertEqual(e.path, "sync.min_interval_ms", str(e))
