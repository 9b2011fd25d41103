"""Start a real ``estuary stack`` (separate processes) for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Optional

import treq
import yaml
from twisted.internet import defer

from tests.utils.services import create_test_database, redis_test_url
from tests.utils.wait import wait_until
from workers.embedded import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ALL_ROLES = ["client_reader", "client_writer", "sync", "federation_inbound", "federation_sender", "media", "pusher", "background", "admin"]


def layout_three(ports) -> dict[str, Any]:
    """writer / reader / sync: the smallest multi-process layout."""
    return {
        "writer": {"roles": ["client_writer", "federation_sender", "pusher", "background", "admin"]},
        "reader": {"roles": ["client_reader", "federation_inbound", "media"]},
        "sync": {"roles": ["sync"]},
    }


class Stack:
    """One running stack, its config and helpers to reach it."""

    def __init__(
        self,
        testcase: Any,
        reactor: Any,
        instances: dict[str, dict[str, Any]],
        redis_url: Optional[str] = None,
        extra_config: Optional[dict[str, Any]] = None,
    ) -> None:
        self.testcase = testcase
        self.reactor = reactor
        self.dir = tempfile.mkdtemp(prefix="estuary-e2e-")
        self.router_port = free_port()
        self.instances: dict[str, dict[str, Any]] = {}
        for name, spec in instances.items():
            spec = dict(spec)
            spec["listen"] = f"127.0.0.1:{free_port()}"
            spec["replication_listen"] = f"127.0.0.1:{free_port()}"
            self.instances[name] = spec
        self.config = {
            "server_name": "localhost",
            "data_dir": self.dir,
            "database": {"dsn": create_test_database(testcase), "pool_size": 4},
            "redis": {"url": redis_url or redis_test_url(testcase)},
            "replication": {"secret": "e2e-secret-0123456789"},
            "router": {"listen": f"127.0.0.1:{self.router_port}", "health_interval_seconds": 0.2},
            "instances": self.instances,
            # Open registration and cheap password hashing: test accounts only.
            "registration": {"enable_registration": True, "registration_shared_secret": "e2e-shared-secret"},
            "password_policy": {"bcrypt_rounds": 4},
            # Load-style tests send faster than the default per-user limits;
            # tests of rate limiting turn them back on.
            "rate_limits": {"enabled": False},
        }
        self.config.update(extra_config or {})
        self.config_path = os.path.join(self.dir, "homeserver.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f)
        self.process: Optional[subprocess.Popen] = None
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.log_path = os.path.join(self.dir, "stack.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    def instance_base(self, name: str) -> str:
        return "http://" + self.instances[name]["listen"]

    def start(self) -> defer.Deferred:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("ESTUARY_DATABASE_DSN", None)
        env.pop("ESTUARY_REDIS_URL", None)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers", "stack", "--config", self.config_path],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.testcase.addCleanup(self.stop)
        return self.wait_all_ready()

    def wait_all_ready(self, timeout: float = 60) -> defer.Deferred:
        @defer.inlineCallbacks
        def ready():
            for name in self.instances:
                code, _ = yield self.get(self.instance_base(name) + "/_estuary/ready")
                if code != 200:
                    return False
            code, body = yield self.get(self.base + "/_estuary/router")
            return code == 200 and all(body["instances"].values())

        return wait_until(self.reactor, ready, timeout=timeout, what="every instance ready")

    @defer.inlineCallbacks
    def get(self, url: str):
        """(status, json) or (None, None) when nothing answers."""
        try:
            d = treq.get(url, persistent=False)
            d.addTimeout(5, self.reactor)
            resp = yield d
            body = yield treq.json_content(resp)
            return resp.code, body
        except Exception:
            return None, None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()
