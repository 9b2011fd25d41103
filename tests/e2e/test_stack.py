"""End to end: real `estuary stack` processes behind the built-in router."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import yaml
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.e2e.stack import ROOT, Stack, layout_three
from tests.utils.wait import wait_until
from workers.embedded import EmbeddedRedis


class StackTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_health_restart_and_redis_outage(self):
        """The stack answers through the router; a kill -9'd instance is restarted;
        instances go not-ready while Redis is down and recover when it returns."""
        tmp = tempfile.mkdtemp(prefix="estuary-redis-")
        self.addCleanup(shutil.rmtree, tmp, True)
        redis = EmbeddedRedis(tmp)
        redis.start()
        self.addCleanup(redis.stop)
        stack = Stack(self, reactor, layout_three(None), redis_url=redis.url)
        try:
            yield stack.start()
        except Exception:
            self.fail("stack did not become ready:\n" + stack.log()[-4000:])

        code, body = yield stack.get(stack.base + "/health")
        self.assertEqual(code, 200)
        self.assertEqual(body["status"], "ok")
        for name in stack.instances:
            code, body = yield stack.get(stack.instance_base(name) + "/health")
            self.assertEqual((code, body["instance"]), (200, name))
        import treq

        resp = yield treq.get(stack.instance_base("writer") + "/metrics", persistent=False)
        text = (yield treq.content(resp)).decode()
        self.assertEqual(resp.code, 200)
        self.assertIn("process_resident_memory_bytes", text)
        self.assertIn("estuary_http_requests_total", text)

        # kill -9 one instance: the supervisor restarts it.
        code, body = yield stack.get(stack.instance_base("reader") + "/health")
        old_pid = body["pid"]
        os.kill(old_pid, signal.SIGKILL)

        @defer.inlineCallbacks
        def restarted():
            code, body = yield stack.get(stack.instance_base("reader") + "/health")
            return code == 200 and body["pid"] != old_pid

        yield wait_until(reactor, restarted, timeout=30, what="reader restarted")
        yield stack.wait_all_ready()

        # Redis goes away: readiness fails; it comes back: readiness recovers.
        redis.stop()

        @defer.inlineCallbacks
        def not_ready():
            code, body = yield stack.get(stack.instance_base("sync") + "/_estuary/ready")
            return code == 503 and body["checks"]["bus"] is False and body["checks"]["database"] is True

        yield wait_until(reactor, not_ready, timeout=30, what="sync not ready without Redis")
        redis.start()
        yield stack.wait_all_ready(timeout=60)


class ConfigRefusalTests(unittest.TestCase):
    def run_with(self, config):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "bad.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, "-m", "workers", "run", "--config", path, "--instance", "a"], capture_output=True, text=True, env=env, timeout=60)

    def base(self):
        return {
            "server_name": "localhost",
            "replication": {"secret": "0123456789abcdef"},
            "instances": {"a": {"roles": ["client_writer"], "listen": "127.0.0.1:18081", "replication_listen": "127.0.0.1:19081"}},
        }

    def test_typo_refused_with_key_path(self):
        """A malformed value exits 2 with one line naming the key, no traceback."""
        cfg = self.base()
        cfg["instances"]["a"]["listen"] = "127.0.0.1"
        result = self.run_with(cfg)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stderr.strip(), "estuary: config error: instances.a.listen: expected host:port")

    def test_unowned_shard_refused(self):
        """Two writers that leave a shard unowned are refused, naming the stream."""
        cfg = self.base()
        cfg["streams"] = {"events": 2}
        cfg["instances"]["a"]["shards"] = {"events": [0]}
        cfg["instances"]["b"] = {"roles": ["client_writer"], "listen": "127.0.0.1:18082", "replication_listen": "127.0.0.1:19082", "shards": {"events": [1]}}
        result = self.run_with(cfg)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("estuary: config error: streams.", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)


class FederationSurfaceTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_key_server_and_version_through_router(self):
        """A stack serves its signed server keys and version on the federation routes."""
        import treq
        from signedjson.key import decode_verify_key_bytes
        from signedjson.sign import verify_signed_json
        from unpaddedbase64 import decode_base64

        stack = Stack(self, reactor, layout_three(None))
        yield stack.start()
        code, body = yield stack.get(stack.base + "/_matrix/key/v2/server")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["server_name"], "localhost")
        (key_id, key), = body["verify_keys"].items()
        verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
        verify_signed_json(body, "localhost", verify_key)
        code, body = yield stack.get(stack.base + "/_matrix/federation/v1/version")
        self.assertEqual(code, 200)
        self.assertEqual(body["server"]["name"], "Estuary")
