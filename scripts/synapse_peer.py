"""Run Synapse (the reference homeserver) beside Estuary on loopback.

For benchmarks and interop tests only: Synapse comes from PyPI
(``matrix-synapse[postgres]``) installed in a venv outside this repository,
given with ``--synapse-venv`` / ``SYNAPSE_VENV``. This module writes a
config for a plain-HTTP listener on 127.0.0.1, a PostgreSQL database with C
collation, open registration plus a shared secret, rate limits raised, no
key servers and no certificate checks for loopback federation, then starts
and stops the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RATE_UNLIMITED = {"per_second": 100000, "burst_count": 100000}


class SynapsePeer:
    def __init__(self, venv: str, workdir: str, postgres_dsn_for, server_name: str = "synapse.localhost", port: Optional[int] = None,
                 tls: Optional[tuple[str, str]] = None, extra_config: Optional[dict] = None) -> None:
        """``tls=(certificate_path, private_key_path)`` serves the listener over HTTPS (Synapse
        federates over TLS only: name the server ``127.0.0.1:<port>`` so peers dial this listener).
        ``extra_config`` entries override or add top-level homeserver.yaml keys."""
        from workers.embedded import free_port

        self.python = os.path.join(venv, "bin", "python")
        if not os.path.exists(self.python):
            raise FileNotFoundError(f"no Synapse venv at {venv} (pip install 'matrix-synapse[postgres]' into it)")
        self.workdir = os.path.abspath(workdir)
        self.server_name = server_name
        self.port = port or free_port()
        self.dbname = "synapse_" + os.urandom(4).hex()
        self.dsn = postgres_dsn_for(self.dbname)
        self.shared_secret = "synapse-shared-secret-" + os.urandom(8).hex()
        self.process: Optional[subprocess.Popen] = None
        self.tls = tls
        self.extra_config = dict(extra_config or {})

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _config(self) -> dict:
        from urllib.parse import urlsplit

        parts = urlsplit(self.dsn)
        config = {
            "server_name": self.server_name,
            "pid_file": os.path.join(self.workdir, "homeserver.pid"),
            "report_stats": False,
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False, "x_forwarded": True, "resources": [{"names": ["client", "federation"], "compress": False}]}],
            "database": {"name": "psycopg2", "args": {"user": parts.username or "postgres", "host": parts.hostname, "port": parts.port or 5432, "database": self.dbname, "cp_min": 5, "cp_max": 10}},
            "log_config": os.path.join(self.workdir, "log.yaml"),
            "media_store_path": os.path.join(self.workdir, "media"),
            "signing_key_path": os.path.join(self.workdir, "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": False,
            "ip_range_blacklist": [],
            "federation_ip_range_blacklist": [],
            "rc_message": RATE_UNLIMITED,
            "rc_registration": RATE_UNLIMITED,
            "rc_login": {"address": RATE_UNLIMITED, "account": RATE_UNLIMITED, "failed_attempts": RATE_UNLIMITED},
            "rc_joins": {"local": RATE_UNLIMITED, "remote": RATE_UNLIMITED},
            "rc_joins_per_room": RATE_UNLIMITED,
            "rc_invites": {"per_room": RATE_UNLIMITED, "per_user": RATE_UNLIMITED, "per_issuer": RATE_UNLIMITED},
            "rc_presence": {"per_user": RATE_UNLIMITED},
            "presence": {"enabled": False},
            "url_preview_enabled": False,
        }
        if self.tls:
            config["listeners"][0]["tls"] = True
            config["tls_certificate_path"], config["tls_private_key_path"] = self.tls
            config["federation_client_minimum_tls_version"] = "1.2"
        config.update(self.extra_config)
        return config

    def start(self, timeout: float = 120) -> None:
        import psycopg2
        import yaml
        from psycopg2 import sql

        os.makedirs(self.workdir, exist_ok=True)
        admin_dsn = self.dsn.rsplit("/", 1)[0] + "/postgres"
        conn = psycopg2.connect(admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Identifier(self.dbname)))
        conn.close()
        with open(os.path.join(self.workdir, "log.yaml"), "w") as f:
            yaml.safe_dump({"version": 1, "formatters": {"p": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}}, "handlers": {"file": {"class": "logging.FileHandler", "formatter": "p", "filename": os.path.join(self.workdir, "synapse.log")}}, "root": {"level": "WARNING", "handlers": ["file"]}, "disable_existing_loggers": False}, f)
        path = os.path.join(self.workdir, "homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(self._config(), f)
        subprocess.run([self.python, "-m", "synapse.app.homeserver", "-c", path, "--generate-keys"], check=True, capture_output=True, cwd=self.workdir)
        out = open(os.path.join(self.workdir, "stdout.log"), "ab")
        self.process = subprocess.Popen([self.python, "-m", "synapse.app.homeserver", "-c", path], cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("Synapse exited during startup; see " + os.path.join(self.workdir, "stdout.log"))
            try:
                import ssl

                context = ssl._create_unverified_context() if self.tls else None
                with urllib.request.urlopen(self.base + "/_matrix/client/versions", timeout=1, context=context) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError("Synapse did not start in time")

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        try:
            import psycopg2
            from psycopg2 import sql

            conn = psycopg2.connect(self.dsn.rsplit("/", 1)[0] + "/postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
            conn.close()
        except Exception:
            pass
        if not os.environ.get("KEEP_SYNAPSE_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)
