"""workers.federation composes the federation graph from the config."""

import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial import unittest

from homeserver.config import load_config
from homeserver.http.server import JsonResource
from workers.federation import build_federation, mount_federation_inbound


def config(tmp):
    return load_config(
        {
            "server_name": "example.org",
            "signing_key_path": os.path.join(tmp, "example.org.signing.key"),
            "replication": {"secret": "x" * 32},
            "federation": {"verify_certificates": False, "sender_poll_interval_seconds": 1},
            "instances": {
                "main": {"roles": ["client_writer", "federation_inbound"], "listen": "127.0.0.1:8081", "replication_listen": "127.0.0.1:9081"},
                "fed2": {"roles": ["federation_sender"], "listen": "127.0.0.1:8082", "replication_listen": "127.0.0.1:9082"},
                "fed1": {"roles": ["federation_sender"], "listen": "127.0.0.1:8083", "replication_listen": "127.0.0.1:9083"},
            },
        },
        env={},
    )


class WiringTests(unittest.TestCase):
    def test_build(self):
        """Signing key generated on first build and reused; senders only on sender instances; routes mounted."""
        tmp = tempfile.mkdtemp()
        cfg = config(tmp)
        self.assertEqual(cfg.unknown_keys, ())
        main = build_federation(Clock(), cfg, database=object(), instance_name="main", dns=object(), well_known=object())
        self.assertIsNone(main.sender)
        fed1 = build_federation(Clock(), cfg, database=object(), instance_name="fed1", dns=object(), well_known=object())
        self.assertIsNotNone(fed1.sender)
        self.assertEqual(fed1.local_keys.signing_key.encode(), main.local_keys.signing_key.encode())
        self.assertEqual({fed1.sender.owns("a.test"), build_federation(
            Clock(), cfg, database=object(), instance_name="fed2", dns=object(), well_known=object()
        ).sender.owns("a.test")}, {True, False})
        resource = JsonResource(Clock())
        mount_federation_inbound(main, resource)
        self.assertEqual(
            {r.name for r in resource.routes()}, {"key_server", "key_query_one", "key_query", "federation_version"}
        )

    def test_queue_everywhere(self):
        """Every process gets a queue; only sender processes wake a local sender with it."""
        cfg = config(tempfile.mkdtemp())
        main = build_federation(Clock(), cfg, database=object(), instance_name="main", dns=object(), well_known=object())
        fed1 = build_federation(Clock(), cfg, database=object(), instance_name="fed1", dns=object(), well_known=object())
        self.assertIsNone(main.queue._on_queued)
        self.assertIs(fed1.queue, fed1.sender.queue)
        self.assertEqual(fed1.queue._on_queued, fed1.sender.wake)

    def test_signals_reach_the_owning_sender(self):
        """With signals, queued work for a destination wakes its owner: a local sender directly,
        a sender elsewhere through a signal; sender instances listen for signals."""

        class Signals:
            def __init__(self):
                self.sent, self.listeners = [], []

            def publish(self, name, message):
                self.sent.append((name, message))

            def listen(self, name, callback):
                self.listeners.append((name, callback))

        cfg = config(tempfile.mkdtemp())
        signals = Signals()
        main = build_federation(Clock(), cfg, database=object(), instance_name="main", dns=object(), well_known=object(),
                                signals=signals)
        main.queue.notify(["a.test", "b.test"])
        self.assertEqual(signals.sent, [("federation_wake", "a.test"), ("federation_wake", "b.test")])
        self.assertEqual(signals.listeners, [])

        signals = Signals()
        fed1 = build_federation(Clock(), cfg, database=object(), instance_name="fed1", dns=object(), well_known=object(),
                                signals=signals)
        self.assertEqual(signals.listeners, [("federation_wake", fed1.sender.wake)])
        woken = []
        fed1.sender.wake = woken.append
        mine = next(d for d in ("a.test", "b.test", "c.test", "d.test") if fed1.sender.owns(d))
        theirs = next(d for d in ("a.test", "b.test", "c.test", "d.test") if not fed1.sender.owns(d))
        fed1.queue.notify([mine, theirs])
        self.assertEqual(woken, [mine])
        self.assertEqual(signals.sent, [("federation_wake", theirs)])


class FreePortTests(unittest.TestCase):
    def test_never_the_same_port_twice(self):
        """free_port hands out distinct ports even though the kernel may reuse a closed one."""
        from workers.embedded import free_port

        ports = [free_port() for _ in range(200)]
        self.assertEqual(len(ports), len(set(ports)))
