"""Private PostgreSQL and Redis servers for local runs and test suites.

``estuary stack`` uses them when the config names no database or Redis;
``scripts/test`` uses them for throwaway test servers. Each server lives in
a directory of its own, listens on loopback on a free port, and is stopped
by :meth:`stop` (the supervisor calls it on exit).

PostgreSQL refuses to run as root: when we are root, the cluster is owned by
and run as the ``postgres`` system user (created by Debian's package).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from typing import Optional


class EmbeddedError(Exception):
    """A server could not be provisioned; the message says what to install."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, and not handed out before by this process.

    The kernel may give the same ephemeral port to two binds in a row once
    the first socket is closed; callers choosing several ports for one
    config (listen, replication, router...) must never get one twice.
    """
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no fresh free port found")


def find_postgres_bindir() -> Optional[str]:
    """The directory holding ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    for d in candidates:
        if os.path.exists(os.path.join(d, "pg_ctl")) and os.path.exists(os.path.join(d, "initdb")):
            return d
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return os.path.dirname(pg_ctl)
    return None


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not start listening on port {port} within {timeout}s")


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``directory`` (created on first start)."""

    def __init__(self, directory: str, port: Optional[int] = None) -> None:
        self.directory = os.path.realpath(directory)
        self.datadir = os.path.join(self.directory, "data")
        self.port = port or free_port()
        self.bindir = find_postgres_bindir()
        if self.bindir is None:
            raise EmbeddedError("PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install postgresql)")
        self._run_as: Optional[str] = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise EmbeddedError("running as root needs the 'postgres' system user (apt-get install postgresql creates it)")
            self._run_as = "postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def _prepare_dir(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        if not self._run_as:
            return
        pw = pwd.getpwnam(self._run_as)
        os.chown(self.directory, pw.pw_uid, pw.pw_gid)
        if self._reachable(self.directory):
            return
        # A parent the postgres user cannot traverse (a 0700 home or temp
        # directory): keep the cluster under /var/tmp instead and leave a
        # symlink where it was asked for, rather than loosen the parent.
        digest = hashlib.sha1(self.directory.encode()).hexdigest()[:12]
        elsewhere = f"/var/tmp/estuary-pg-{digest}"
        os.makedirs(elsewhere, exist_ok=True)
        os.chown(elsewhere, pw.pw_uid, pw.pw_gid)
        os.chmod(elsewhere, 0o700)
        if not self._reachable(elsewhere):
            raise EmbeddedError(f"the postgres user cannot write {self.directory} nor {elsewhere}")
        os.rmdir(self.directory)
        os.symlink(elsewhere, self.directory)
        self.directory = elsewhere
        self.datadir = os.path.join(elsewhere, "data")

    def _reachable(self, path: str) -> bool:
        probe = subprocess.run(self._cmd("test", "-w", path), capture_output=True)
        return probe.returncode == 0

    def start(self) -> None:
        """Create the cluster if needed, then start it and wait for it to accept connections."""
        self._prepare_dir()
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            result = subprocess.run(
                self._cmd(os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise EmbeddedError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        # A cluster left running by a supervisor that was killed: stop it so
        # that it restarts on the port chosen now.
        status = subprocess.run(self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "status"), capture_output=True)
        if status.returncode == 0:
            self.stop()
        log = os.path.join(self.directory, "postgres.log")
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            open(log, "a").close()
            os.chown(log, pw.pw_uid, pw.pw_gid)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300"
        result = subprocess.run(
            self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", log, "-o", opts, "-w", "-t", "60", "start"),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = ""
            try:
                with open(log) as f:
                    tail = f.read()[-2000:]
            except OSError:
                pass
            raise EmbeddedError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        _wait_port(self.port, 30, "PostgreSQL")

    def create_database(self, name: str) -> str:
        """Create database ``name`` (C collation) if absent; return its DSN."""
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    from psycopg2 import sql

                    cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.dsn_for(name)

    def stop(self) -> None:
        subprocess.run(
            self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "stop"),
            capture_output=True,
        )


class EmbeddedRedis:
    """A ``redis-server`` keeping nothing on disk, on a free loopback port."""

    def __init__(self, directory: str, port: Optional[int] = None) -> None:
        self.directory = os.path.abspath(directory)
        self.port = port or free_port()
        self.binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
        if self.binary is None:
            raise EmbeddedError("redis-server not found: install it (Debian/Ubuntu: apt-get install redis-server)")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        log = open(os.path.join(self.directory, "redis.log"), "ab")
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no", "--dir", self.directory, "--daemonize", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        _wait_port(self.port, 15, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
