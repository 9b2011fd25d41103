"""Generated configs load and cover every route."""

import yaml
from twisted.trial import unittest

from homeserver.config import load_config
from workers.generate import LAYOUTS, generate_config
from workers.nginx import unreachable_roles


class GenerateConfigTests(unittest.TestCase):
    def test_every_layout_is_valid(self):
        """Each layout parses with no unknown keys, owns every shard and serves every route."""
        for layout in LAYOUTS:
            cfg = load_config(yaml.safe_load(generate_config("example.org", layout)), env={})
            self.assertEqual(cfg.unknown_keys, (), layout)
            self.assertEqual(list(unreachable_roles(cfg)), [], layout)
        self.assertEqual(len(load_config(yaml.safe_load(generate_config("e.org", "eight")), env={}).instances), 8)

    def test_secret_is_random(self):
        """Two generated configs do not share a replication secret."""
        a = yaml.safe_load(generate_config("e.org"))["replication"]["secret"]
        b = yaml.safe_load(generate_config("e.org"))["replication"]["secret"]
        self.assertNotEqual(a, b)
        self.assertGreaterEqual(len(a), 32)


class SampleConfigTests(unittest.TestCase):
    def test_sample_config_loads_cleanly(self):
        """sample_config.yaml parses with no unknown keys and serves every route."""
        import os

        path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "sample_config.yaml")
        with open(path) as f:
            cfg = load_config(yaml.safe_load(f), path=path, env={})
        self.assertEqual(cfg.unknown_keys, ())
        self.assertEqual(list(unreachable_roles(cfg)), [])


class DockerConfigTests(unittest.TestCase):
    def test_docker_config_matches_format(self):
        """docker/homeserver.yaml is a valid config serving every route."""
        import os

        path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docker", "homeserver.yaml")
        with open(path) as f:
            cfg = load_config(yaml.safe_load(f), path=path, env={})
        self.assertEqual(cfg.unknown_keys, ())
        self.assertEqual(list(unreachable_roles(cfg)), [])
        self.assertEqual(len(cfg.instances), 7)
