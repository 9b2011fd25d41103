"""Database.run_interaction against a real PostgreSQL: commit, rollback, retries, reconnects."""

import threading

import psycopg2
import psycopg2.errors
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.trial import unittest

from storage.database import (
    CommitOutcomeUnknownError,
    Database,
    DatabaseClosedError,
    IsolationLevel,
)
from storage.retry import RetryPolicy
from tests.utils.services import create_test_database

FAST_RETRIES = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005)

# Raised by the server, so the error is exactly what psycopg2 produces for a
# real conflict.
RAISE_SERIALIZATION = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$"
RAISE_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'deadlock_detected'; END $$"


def sample(metric, **labels):
    """Current value of a metric sample (0 if absent)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0


class DatabaseTestCase(unittest.TestCase):
    pool_size = 4

    def setUp(self):
        self.dsn = create_test_database(self)
        self.db = Database(self.dsn, reactor, pool_size=self.pool_size, retry_policy=FAST_RETRIES)
        self.addCleanup(self.db.close)
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        conn.close()

    def rows(self):
        """The contents of table t, read outside the pool."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT k, v FROM t ORDER BY k")
                return cur.fetchall()
        finally:
            conn.close()


class InteractionTests(DatabaseTestCase):
    async def test_commit_and_result(self):
        """The function's return value is delivered and its writes are committed."""

        def insert(txn, k, v):
            txn.execute("INSERT INTO t (k, v) VALUES (%s, %s) RETURNING v", (k, v))
            return txn.fetchone()[0] * 2

        self.assertEqual(await self.db.run_interaction("test_insert", insert, "a", v=21), 42)
        self.assertEqual(self.rows(), [("a", 21)])
        self.assertGreaterEqual(
            sample("estuary_db_transaction_duration_seconds_count", name="test_insert"), 1
        )

    async def test_rollback_on_exception(self):
        """An exception rolls back every write of the attempt and reaches the caller, unretried."""
        calls = []
        after = []
        on_exc = []
        before = sample("estuary_db_transaction_failures_total", name="test_fail", reason="fatal")

        def fail(txn):
            calls.append(1)
            txn.execute("INSERT INTO t (k, v) VALUES ('x', 1)")
            txn.call_after(after.append, "after")
            txn.call_on_exception(on_exc.append, "exc")
            raise ValueError("bad input")

        with self.assertRaises(ValueError):
            await self.db.run_interaction("test_fail", fail)
        self.assertEqual(self.rows(), [])
        self.assertEqual((len(calls), after, on_exc), (1, [], ["exc"]))
        self.assertEqual(
            sample("estuary_db_transaction_failures_total", name="test_fail", reason="fatal"), before + 1
        )

    async def test_constraint_violation_not_retried(self):
        """A unique violation is the caller's problem: raised as is, first time."""
        await self.db.run_interaction("test_seed", lambda txn: txn.execute("INSERT INTO t VALUES ('a', 1)"))
        calls = []

        def dup(txn):
            calls.append(1)
            txn.execute("INSERT INTO t VALUES ('a', 2)")

        with self.assertRaises(psycopg2.errors.UniqueViolation):
            await self.db.run_interaction("test_dup", dup)
        self.assertEqual(len(calls), 1)

    async def test_call_after_runs_on_reactor_after_commit(self):
        """call_after callbacks run in order on the reactor thread, after commit, before the result."""
        seen = []

        def write(txn):
            txn.execute("INSERT INTO t VALUES ('a', 1)")
            txn.call_after(lambda: seen.append(("first", threading.current_thread(), self.rows())))
            txn.call_after(seen.append, "second")
            txn.call_on_exception(seen.append, "never")

        await self.db.run_interaction("test_after", write)
        self.assertEqual(seen, [("first", threading.main_thread(), [("a", 1)]), "second"])

    async def test_failing_callback_does_not_break_the_rest(self):
        """An exception in one after-commit callback is logged; later ones still run."""
        seen = []

        def write(txn):
            txn.call_after(lambda: 1 / 0)
            txn.call_after(seen.append, "ran")
            return "ok"

        self.assertEqual(await self.db.run_interaction("test_bad_callback", write), "ok")
        self.assertEqual(seen, ["ran"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_execute_values(self):
        """execute_values inserts many rows in one statement and can fetch RETURNING rows."""

        def insert_many(txn):
            return txn.execute_values(
                "INSERT INTO t (k, v) VALUES %s RETURNING k", [("a", 1), ("b", 2), ("c", 3)], fetch=True
            )

        returned = await self.db.run_interaction("test_values", insert_many)
        self.assertEqual(sorted(returned), [("a",), ("b",), ("c",)])
        self.assertEqual(self.rows(), [("a", 1), ("b", 2), ("c", 3)])

    async def test_isolation_levels(self):
        """READ COMMITTED is the default; REPEATABLE READ can be asked for per interaction."""

        def level(txn):
            txn.execute("SHOW transaction_isolation")
            return txn.fetchone()[0]

        self.assertEqual(await self.db.run_interaction("test_iso", level), "read committed")
        self.assertEqual(
            await self.db.run_interaction(
                "test_iso", level, isolation_level=IsolationLevel.REPEATABLE_READ
            ),
            "repeatable read",
        )
        # The level does not leak into the next interaction on the same connection.
        self.assertEqual(await self.db.run_interaction("test_iso", level), "read committed")

    async def test_returning_an_awaitable_rolls_back(self):
        """A function that returns a Deferred (so did not do its work in the transaction) is rolled back."""
        from twisted.internet import defer

        def sneaky(txn):
            txn.execute("INSERT INTO t VALUES ('a', 1)")
            return defer.succeed(None)

        with self.assertRaises(TypeError):
            await self.db.run_interaction("test_sneaky", sneaky)
        self.assertEqual(self.rows(), [])

    def test_coroutine_function_refused(self):
        """Passing an async function (which would never run in the transaction) is a TypeError."""

        async def oops(txn):
            pass

        self.assertRaises(TypeError, self.db.run_interaction, "test_async", oops)


class RetryTests(DatabaseTestCase):
    async def _retried_once(self, name, raise_sql, reason):
        calls = []
        after = []
        on_exc = []
        before = sample("estuary_db_transaction_retries_total", name=name, reason=reason)

        def flaky(txn):
            calls.append(1)
            txn.execute("INSERT INTO t VALUES (%s, %s)", ("k", len(calls)))
            txn.call_after(after.append, len(calls))
            txn.call_on_exception(on_exc.append, len(calls))
            if len(calls) == 1:
                txn.execute(raise_sql)
            return len(calls)

        self.assertEqual(await self.db.run_interaction(name, flaky), 2)
        self.assertEqual(self.rows(), [("k", 2)])
        self.assertEqual((after, on_exc), ([2], [1]))
        self.assertEqual(sample("estuary_db_transaction_retries_total", name=name, reason=reason), before + 1)

    async def test_serialization_failure_retried(self):
        """A serialization failure rolls the attempt back and runs the function again."""
        await self._retried_once("test_retry_ser", RAISE_SERIALIZATION, "serialization")

    async def test_deadlock_retried(self):
        """A deadlock rolls the attempt back and runs the function again."""
        await self._retried_once("test_retry_dl", RAISE_DEADLOCK, "deadlock")

    async def test_retries_exhausted(self):
        """After max_attempts transient failures the last error reaches the caller."""
        calls = []
        before = sample("estuary_db_transaction_failures_total", name="test_exhaust", reason="serialization")

        def always(txn):
            calls.append(1)
            txn.execute(RAISE_SERIALIZATION)

        with self.assertRaises(psycopg2.errors.SerializationFailure):
            await self.db.run_interaction("test_exhaust", always)
        self.assertEqual(len(calls), FAST_RETRIES.max_attempts)
        self.assertEqual(
            sample("estuary_db_transaction_failures_total", name="test_exhaust", reason="serialization"),
            before + 1,
        )

    async def test_real_serialization_conflict(self):
        """Two REPEATABLE READ increments of one row conflict; the loser is retried and both count."""
        await self.db.run_interaction("test_seed", lambda txn: txn.execute("INSERT INTO t VALUES ('n', 0)"))
        barrier = threading.Barrier(2, timeout=10)
        attempts = []
        before = sample("estuary_db_transaction_retries_total", name="test_rr_incr", reason="serialization")

        def increment(txn):
            attempts.append(1)
            txn.execute("SELECT v FROM t WHERE k = 'n'")  # takes the snapshot
            (v,) = txn.fetchone()
            if len(attempts) <= 2:
                barrier.wait()  # both first attempts hold a snapshot before either writes
            txn.execute("UPDATE t SET v = %s WHERE k = 'n'", (v + 1,))

        await self.gather(
            self.db.run_interaction("test_rr_incr", increment, isolation_level=IsolationLevel.REPEATABLE_READ),
            self.db.run_interaction("test_rr_incr", increment, isolation_level=IsolationLevel.REPEATABLE_READ),
        )
        self.assertEqual(self.rows(), [("n", 2)])
        self.assertEqual(len(attempts), 3)
        self.assertEqual(
            sample("estuary_db_transaction_retries_total", name="test_rr_incr", reason="serialization"), before + 1
        )

    async def test_real_deadlock(self):
        """Two transactions locking rows in opposite orders deadlock; PostgreSQL aborts one, which is retried."""
        await self.db.run_interaction(
            "test_seed", lambda txn: txn.execute("INSERT INTO t VALUES ('a', 0), ('b', 0)")
        )
        barrier = threading.Barrier(2, timeout=10)
        attempts = []
        before = sample("estuary_db_transaction_retries_total", name="test_deadlock", reason="deadlock")

        def lock_both(txn, first, second):
            attempts.append(first)
            txn.execute("SET LOCAL deadlock_timeout = '20ms'")
            txn.execute("UPDATE t SET v = v + 1 WHERE k = %s", (first,))
            if len(attempts) <= 2:
                barrier.wait()
            txn.execute("UPDATE t SET v = v + 1 WHERE k = %s", (second,))

        await self.gather(
            self.db.run_interaction("test_deadlock", lock_both, "a", "b"),
            self.db.run_interaction("test_deadlock", lock_both, "b", "a"),
        )
        self.assertEqual(self.rows(), [("a", 2), ("b", 2)])
        self.assertEqual(len(attempts), 3)
        self.assertEqual(
            sample("estuary_db_transaction_retries_total", name="test_deadlock", reason="deadlock"), before + 1
        )

    async def test_dropped_connection_reconnects(self):
        """A connection killed mid-transaction is replaced and the transaction retried on the new one."""
        pids = []

        def killed_once(txn):
            txn.execute("SELECT pg_backend_pid()")
            pids.append(txn.fetchone()[0])
            txn.execute("INSERT INTO t VALUES ('k', %s)", (len(pids),))
            if len(pids) == 1:
                txn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return len(pids)

        before = sample("estuary_db_transaction_retries_total", name="test_reconnect", reason="connection")
        self.assertEqual(await self.db.run_interaction("test_reconnect", killed_once), 2)
        self.assertNotEqual(pids[0], pids[1])
        self.assertEqual(self.rows(), [("k", 2)])
        self.assertEqual(
            sample("estuary_db_transaction_retries_total", name="test_reconnect", reason="connection"), before + 1
        )
        # The pool keeps working afterwards.
        self.assertTrue(await self.db.ping())

    async def test_server_restart_drops_every_idle_connection(self):
        """After every backend is killed (as by a server restart), one retry on a fresh connection suffices."""
        barrier = threading.Barrier(self.pool_size, timeout=10)

        def hold(txn):
            barrier.wait()  # forces pool_size connections to be open at once

        await self.gather(*[self.db.run_interaction("test_fill", hold) for _ in range(self.pool_size)])
        admin = psycopg2.connect(self.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            self.assertEqual(cur.fetchone()[0], self.pool_size)
        admin.close()
        self.assertGreaterEqual(self.pool_size, FAST_RETRIES.max_attempts)
        calls = []

        def count(txn):
            calls.append(1)
            txn.execute("SELECT 1")

        await self.db.run_interaction("test_after_restart", count)
        self.assertEqual(len(calls), 2)

    async def test_connection_lost_during_commit(self):
        """A connection lost while COMMIT is in flight is not retried: the outcome is unknown."""
        # A deferred constraint trigger runs at COMMIT time; this one kills its own backend.
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
                CREATE TABLE doomed (x INTEGER);
                CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON doomed
                    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die();
                """
            )
        conn.close()
        calls = []
        on_exc = []

        def insert(txn):
            calls.append(1)
            txn.execute("INSERT INTO doomed VALUES (1)")
            txn.call_on_exception(on_exc.append, "rolled back or unknown")

        with self.assertRaises(CommitOutcomeUnknownError):
            await self.db.run_interaction("test_commit_lost", insert)
        self.assertEqual((len(calls), on_exc), (1, ["rolled back or unknown"]))

    def gather(self, *ds):
        from twisted.internet import defer

        return defer.gatherResults(list(ds), consumeErrors=True)


class PoolTests(DatabaseTestCase):
    async def test_pool_runs_pool_size_transactions_at_once(self):
        """pool_size interactions run concurrently, each on its own connection; usage is metered."""
        barrier = threading.Barrier(self.pool_size, timeout=10)
        in_use = []

        def meet(txn):
            txn.execute("SELECT pg_backend_pid()")
            pid = txn.fetchone()[0]
            in_use.append(sample("estuary_db_pool_connections_in_use"))
            barrier.wait()  # only passes if pool_size attempts are running together
            return pid

        from twisted.internet import defer

        baseline = sample("estuary_db_pool_connections_in_use")
        pids = await defer.gatherResults(
            [self.db.run_interaction("test_pool", meet) for _ in range(self.pool_size)], consumeErrors=True
        )
        self.assertEqual(len(set(pids)), self.pool_size)
        self.assertGreaterEqual(sample("estuary_db_pool_size"), self.pool_size)
        self.assertGreaterEqual(sample("estuary_db_pool_connections_open"), self.pool_size)
        self.assertGreaterEqual(max(in_use), baseline + 1)
        self.assertEqual(sample("estuary_db_pool_connections_in_use"), baseline)
        self.assertEqual(sample("estuary_db_pool_interactions_queued"), 0)

    async def test_more_work_than_threads_queues(self):
        """More interactions than connections all complete; connections are reused, never exceeded."""
        from twisted.internet import defer

        def pid(txn):
            txn.execute("SELECT pg_backend_pid()")
            return txn.fetchone()[0]

        pids = await defer.gatherResults(
            [self.db.run_interaction("test_queue", pid) for _ in range(5 * self.pool_size)], consumeErrors=True
        )
        self.assertLessEqual(len(set(pids)), self.pool_size)

    async def test_ping_and_close(self):
        """ping() is True while the database answers; after close() work is refused and ping is False."""
        self.assertTrue(await self.db.ping())
        self.db.close()
        self.db.close()  # idempotent
        with self.assertRaises(DatabaseClosedError):
            await self.db.run_interaction("test_closed", lambda txn: None)
        self.assertFalse(await self.db.ping())

    async def test_ping_unreachable_server(self):
        """ping() reports False (without raising) when the server cannot be reached."""
        db = Database("postgresql://postgres@127.0.0.1:1/none", reactor, pool_size=1, retry_policy=FAST_RETRIES)
        self.addCleanup(db.close)
        self.assertFalse(await db.ping())
