"""Schema migrations against a real PostgreSQL, including several workers preparing at once."""

import os
import shutil
import tempfile
import threading

import psycopg2
from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from storage.database import Database
from storage.migrations import (
    SCHEMA_VERSION,
    SchemaError,
    SchemaTooNewError,
    prepare_database,
    prepare_database_on_connection,
)
from tests.utils.services import create_test_database

TEST_MIGRATIONS = {
    "0001_log.sql": "CREATE TABLE log (entry TEXT NOT NULL);",
    "0002_first.sql": "INSERT INTO log VALUES ('first');",
    "0003_second.sql": "ALTER TABLE log ADD COLUMN n INTEGER; INSERT INTO log VALUES ('second', 2);",
}


class MigrationTests(unittest.TestCase):
    def setUp(self):
        self.dsn = create_test_database(self)

    def schema_dir(self, files):
        """A temporary schema directory holding ``files`` (name -> SQL)."""
        path = tempfile.mkdtemp(prefix="estuary_schema_")
        self.addCleanup(shutil.rmtree, path)
        for name, text in files.items():
            with open(os.path.join(path, name), "w") as f:
                f.write(text)
        return path

    def query(self, q, args=None):
        """Rows of ``q`` run on a fresh connection."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(q, args)
                return cur.fetchall()
        finally:
            conn.close()

    def database(self):
        db = Database(self.dsn, reactor, pool_size=2)
        self.addCleanup(db.close)
        return db

    def advisory_locks_held(self):
        return self.query("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()")[0][0]

    async def test_fresh_database(self):
        """The shipped schema applies to an empty database and records every version."""
        version = await prepare_database(self.database())
        self.assertEqual(version, SCHEMA_VERSION)
        self.assertEqual(
            [v for (v,) in self.query("SELECT version FROM schema_version ORDER BY version")],
            list(range(1, SCHEMA_VERSION + 1)),
        )
        self.assertEqual(self.query("SELECT name FROM schema_version WHERE version = 1"), [("streams",)])
        self.assertEqual(self.query("SELECT count(*) FROM stream_shards"), [(0,)])
        self.assertEqual(self.advisory_locks_held(), 0)

    async def test_idempotent_and_incremental(self):
        """Re-running applies nothing; adding a file later applies only that file."""
        files = dict(TEST_MIGRATIONS)
        third = files.pop("0003_second.sql")
        schema = self.schema_dir(files)
        db = self.database()
        self.assertEqual(await prepare_database(db, schema), 2)
        self.assertEqual(await prepare_database(db, schema), 2)
        self.assertEqual(self.query("SELECT entry FROM log"), [("first",)])
        with open(os.path.join(schema, "0003_second.sql"), "w") as f:
            f.write(third)
        self.assertEqual(await prepare_database(db, schema), 3)
        self.assertEqual(self.query("SELECT entry, n FROM log ORDER BY entry"), [("first", None), ("second", 2)])

    async def test_concurrent_preparers(self):
        """Several workers preparing one database at the same moment apply each file exactly once."""
        schema = self.schema_dir(TEST_MIGRATIONS)
        workers = 6
        barrier = threading.Barrier(workers, timeout=10)

        def worker():
            conn = psycopg2.connect(self.dsn)
            try:
                barrier.wait()
                return prepare_database_on_connection(conn, schema)
            finally:
                conn.close()

        pool = ThreadPool(minthreads=workers, maxthreads=workers, name="test-preparers")
        pool.start()
        self.addCleanup(pool.stop)
        results = await defer.gatherResults(
            [threads.deferToThreadPool(reactor, pool, worker) for _ in range(workers)], consumeErrors=True
        )
        self.assertEqual(results, [3] * workers)
        self.assertEqual(self.query("SELECT entry, n FROM log ORDER BY entry"), [("first", None), ("second", 2)])
        self.assertEqual(self.query("SELECT version FROM schema_version ORDER BY version"), [(1,), (2,), (3,)])
        self.assertEqual(self.advisory_locks_held(), 0)

    async def test_concurrent_databases(self):
        """prepare_database from several Database objects at once converges on the shipped schema."""
        versions = await defer.gatherResults(
            [prepare_database(self.database()) for _ in range(4)], consumeErrors=True
        )
        self.assertEqual(versions, [SCHEMA_VERSION] * 4)
        self.assertEqual(self.query("SELECT count(*) FROM schema_version"), [(SCHEMA_VERSION,)])

    async def test_refuses_newer_schema(self):
        """A database migrated by newer code is refused with SchemaTooNewError and left untouched."""
        db = self.database()
        await prepare_database(db)
        self.query_commit(
            "INSERT INTO schema_version (version, name) VALUES (%s, 'from_the_future')", (SCHEMA_VERSION + 1,)
        )
        with self.assertRaises(SchemaTooNewError) as cm:
            await prepare_database(db)
        self.assertEqual(cm.exception.database_version, SCHEMA_VERSION + 1)
        self.assertEqual(cm.exception.code_version, SCHEMA_VERSION)
        self.assertEqual(self.advisory_locks_held(), 0)

    async def test_diverged_history_refused(self):
        """A database whose version 2 came from another file of that number is refused, not patched over."""
        db = self.database()
        files = {k: v for k, v in TEST_MIGRATIONS.items() if not k.startswith("0003")}
        await prepare_database(db, self.schema_dir(files))
        files.pop("0002_first.sql")
        files["0002_other.sql"] = "SELECT 1;"
        with self.assertRaises(SchemaError):
            await prepare_database(db, self.schema_dir(files))
        self.assertEqual(self.advisory_locks_held(), 0)

    async def test_failed_migration_rolled_back(self):
        """A failing file leaves no partial changes and no version row; earlier files stay applied."""
        schema = self.schema_dir(
            {
                "0001_log.sql": TEST_MIGRATIONS["0001_log.sql"],
                "0002_broken.sql": "CREATE TABLE half (x INTEGER); INSERT INTO log VALUES (NULL);",
            }
        )
        with self.assertRaises(psycopg2.errors.NotNullViolation):
            await prepare_database(self.database(), schema)
        self.assertEqual(self.query("SELECT version FROM schema_version"), [(1,)])
        self.assertEqual(self.query("SELECT to_regclass('half')"), [(None,)])
        self.assertEqual(self.advisory_locks_held(), 0)

    def query_commit(self, q, args=None):
        conn = psycopg2.connect(self.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(q, args)
        finally:
            conn.close()
