"""The generated nginx config routes exactly as the built-in router does.

Real nginx (Debian's package) is started on loopback in front of one tiny
HTTP server per configured instance; each answers with its own name. For
many request shapes and room/user IDs, the instance nginx picked must be
the one the built-in router's balancer picks.
"""

import json
import os
import shutil
import subprocess
import tempfile

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from homeserver.config import load_config
from workers.nginx import generate_nginx_config
from workers.router import Balancer
from workers.routes import Affinity, match_route
from tests.utils.wait import wait_until

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


class _Named(resource.Resource):
    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name

    def render(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"instance": self.name, "uri": request.uri.decode()}).encode()


class _AllHealthy:
    def is_healthy(self, name):
        return True


def _config(ports):
    names = ["reader", "sync1", "sync2", "w1", "w2", "misc"]
    listen = dict(zip(names, ports))
    return load_config(
        {
            "server_name": "example.org",
            "replication": {"secret": "s" * 32},
            "streams": {"events": 3, "account_data": 2, "presence": 2},
            "instances": {
                "reader": {"roles": ["client_reader"], "listen": f"127.0.0.1:{listen['reader']}", "replication_listen": "127.0.0.1:1"},
                "sync1": {"roles": ["sync"], "listen": f"127.0.0.1:{listen['sync1']}", "replication_listen": "127.0.0.1:2"},
                "sync2": {"roles": ["sync"], "listen": f"127.0.0.1:{listen['sync2']}", "replication_listen": "127.0.0.1:3"},
                "w1": {
                    "roles": ["client_writer"],
                    "listen": f"127.0.0.1:{listen['w1']}",
                    "replication_listen": "127.0.0.1:4",
                    "shards": {"events": "0-1", "account_data": 0, "presence": "all", "receipts": "all", "typing": "all", "to_device": "all", "device_lists": "all", "push_rules": "all"},
                },
                "w2": {
                    "roles": ["client_writer"],
                    "listen": f"127.0.0.1:{listen['w2']}",
                    "replication_listen": "127.0.0.1:5",
                    "shards": {"events": [2], "account_data": [1]},
                },
                "misc": {
                    "roles": ["media", "federation_inbound", "admin"],
                    "listen": f"127.0.0.1:{listen['misc']}",
                    "replication_listen": "127.0.0.1:6",
                },
            },
        },
        env={},
    )


class NginxRoutingTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if NGINX is None:
            raise unittest.SkipTest("nginx is not installed")
        self.ports = []
        self.listeners = []
        for name in ["reader", "sync1", "sync2", "w1", "w2", "misc"]:
            port = reactor.listenTCP(0, server.Site(_Named(name)), interface="127.0.0.1")
            self.listeners.append(port)
            self.ports.append(port.getHost().port)
        self.config = _config(self.ports)
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    @defer.inlineCallbacks
    def tearDown(self):
        for port in self.listeners:
            yield port.stopListening()

    def _write_nginx_conf(self, listen_port):
        include = os.path.join(self.tmp, "estuary.conf")
        with open(include, "w") as f:
            f.write(generate_nginx_config(self.config, listen=f"127.0.0.1:{listen_port}"))
        main = os.path.join(self.tmp, "nginx.conf")
        with open(main, "w") as f:
            f.write(
                f"""
daemon off;
worker_processes 1;
pid {self.tmp}/nginx.pid;
error_log {self.tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {self.tmp}/body;
    proxy_temp_path {self.tmp}/proxy;
    fastcgi_temp_path {self.tmp}/fastcgi;
    uwsgi_temp_path {self.tmp}/uwsgi;
    scgi_temp_path {self.tmp}/scgi;
    include {include};
}}
"""
            )
        return main

    def test_config_is_valid(self):
        """`nginx -t` accepts the generated config."""
        main = self._write_nginx_conf(18999)
        result = subprocess.run([NGINX, "-t", "-c", main, "-p", self.tmp], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)

    @defer.inlineCallbacks
    def test_nginx_agrees_with_builtin_router(self):
        """For every rule shape, nginx and the built-in balancer pick the same instance."""
        probe = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
        port = probe.getHost().port
        yield probe.stopListening()
        main = self._write_nginx_conf(port)
        proc = subprocess.Popen([NGINX, "-c", main, "-p", self.tmp], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.terminate)
        base = f"http://127.0.0.1:{port}"

        @defer.inlineCallbacks
        def up():
            try:
                r = yield treq.get(base + "/_matrix/client/versions", persistent=False)
                yield treq.content(r)
                return r.code == 200
            except Exception:
                return False

        yield wait_until(reactor, up, timeout=15)

        balancer = Balancer(self.config, _AllHealthy())
        cases = [("GET", "/health"), ("GET", "/_matrix/client/versions"), ("GET", "/_matrix/media/v3/download/a/b"),
                 ("GET", "/_matrix/federation/v1/version"), ("GET", "/_synapse/admin/v1/users"),
                 ("POST", "/_matrix/client/v3/createRoom"), ("GET", "/.well-known/matrix/client")]
        for i in range(40):
            room = f"!room{i}:example.org"
            user = f"@user{i}:example.org"
            cases.append(("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}"))
            cases.append(("POST", f"/_matrix/client/v3/join/{room}"))
            cases.append(("GET", f"/_matrix/client/v3/rooms/{room}/messages"))
            cases.append(("PUT", f"/_matrix/client/v3/user/{user}/account_data/m.direct"))
            cases.append(("PUT", f"/_matrix/client/v3/presence/{user}/status"))
        cases.append(("POST", "/_matrix/client/v3/join/%23alias:example.org"))
        checked_owner = 0
        for method, path in cases:
            from urllib.parse import unquote

            match = match_route(method, unquote(path))
            self.assertIsNotNone(match, path)
            want = balancer.choose(match, None).name
            resp = yield treq.request(method, base + path.replace("!", "%21").replace("@", "%40"), data=b"{}", persistent=False)
            body = yield treq.json_content(resp)
            if match.rule.affinity in (Affinity.ROOM, Affinity.USER) and match.key and match.key[0] in "!@":
                checked_owner += 1
                self.assertEqual(body["instance"], want, (method, path))
            else:
                # Round-robin rules: nginx may pick another instance of the same role.
                role_names = {i.name for i in self.config.instances_with_role(match.rule.role)}
                self.assertIn(body["instance"], role_names, (method, path))
        self.assertEqual(checked_owner, 160)

        resp = yield treq.get(base + "/nothing/here", persistent=False)
        self.assertEqual(resp.code, 404)
        body = yield treq.json_content(resp)
        self.assertEqual(body["errcode"], "M_UNRECOGNIZED")
