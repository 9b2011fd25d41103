"""Transaction.execute_prepared against a real PostgreSQL: PREPARE once per connection, then EXECUTE."""

import json
import threading

import psycopg2
import psycopg2.errors
from twisted.internet import defer, reactor

from storage.database import Database, PreparedStatementConflict, Transaction
from tests.integration.storage.test_database import FAST_RETRIES, DatabaseTestCase, sample

PREPARED = "estuary_db_statements_prepared_total"

SELECT_V = "SELECT v FROM t WHERE k = %s"


def server_prepared(txn):
    """The prepared statements of this transaction's session, as {name: statement text}."""
    txn.execute("SELECT name, statement FROM pg_prepared_statements")
    return dict(txn.fetchall())


def backend_pid(txn):
    txn.execute("SELECT pg_backend_pid()")
    return txn.fetchone()[0]


class PreparedTestCase(DatabaseTestCase):
    pool_size = 1  # one connection, so consecutive interactions share a session

    def setUp(self):
        super().setUp()
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3)")
            cur.execute(
                "CREATE TABLE typed (id BIGINT, names TEXT[], ids BIGINT[], flag BOOLEAN, body JSONB,"
                " note TEXT, ratio DOUBLE PRECISION, raw BYTEA)"
            )
        conn.close()

    def interact(self, name, fn, *args, **kwargs):
        return self.db.run_interaction(name, fn, *args, **kwargs)


class PrepareOnceTests(PreparedTestCase):
    async def test_prepared_once_then_executed(self):
        """The first use prepares (on the server, with $n parameters); later uses only execute."""
        before = sample(PREPARED, name="test_select_v")

        def read(txn, k):
            txn.execute_prepared("test_select_v", SELECT_V, (k,))
            return txn.fetchall(), server_prepared(txn)

        rows, on_server = await self.interact("test_prep", read, "a")
        self.assertEqual(rows, [(1,)])
        self.assertEqual(on_server, {"test_select_v": "PREPARE test_select_v AS SELECT v FROM t WHERE k = $1"})
        for k, v in (("b", 2), ("c", 3), ("zz", None)):
            rows, _ = await self.interact("test_prep", read, k)
            self.assertEqual(rows, [(v,)] if v is not None else [])
        self.assertEqual(sample(PREPARED, name="test_select_v"), before + 1)

    async def test_rowcount_and_returning(self):
        """rowcount and RETURNING rows come back through EXECUTE as through a plain statement."""

        def update(txn):
            txn.execute_prepared("test_bump", "UPDATE t SET v = v + %s WHERE k <> %s RETURNING k", (10, "b"))
            return txn.rowcount, sorted(txn.fetchall())

        self.assertEqual(await self.interact("test_bump", update), (2, [("a",), ("c",)]))
        self.assertEqual(self.rows(), [("a", 11), ("b", 2), ("c", 13)])
        self.assertEqual(await self.interact("test_bump", update), (2, [("a",), ("c",)]))

    async def test_no_parameters(self):
        """A statement without placeholders prepares and executes without an argument list."""

        def count(txn):
            txn.execute_prepared("test_count_t", "SELECT count(*) FROM t")
            return txn.fetchone()[0]

        self.assertEqual(await self.interact("test_count", count), 3)
        self.assertEqual(await self.interact("test_count", count), 3)

    async def test_percent_literals(self):
        """%% is a literal % (as with execute), in the prepared text and in the fallback alike."""
        query = "SELECT k, '100%%' FROM t WHERE k LIKE %s || '%%' ORDER BY k"
        query0 = "SELECT '50%%'"

        def like(txn):
            txn.execute_prepared("test_like", query, ("b",))
            rows = txn.fetchall()
            txn.execute_prepared("test_percent_only", query0)
            return rows, txn.fetchone()[0], server_prepared(txn)

        rows, lone, on_server = await self.interact("test_like", like)
        self.assertEqual((rows, lone), ([("b", "100%")], "50%"))
        self.assertEqual(on_server["test_like"], "PREPARE test_like AS SELECT k, '100%' FROM t WHERE k LIKE $1 || '%' ORDER BY k")
        rows, lone, _ = await self.interact("test_like", like)
        self.assertEqual((rows, lone), ([("b", "100%")], "50%"))

        plain = Database(self.dsn, reactor, pool_size=1, retry_policy=FAST_RETRIES, prepared_statements=False)
        self.addCleanup(plain.close)
        self.assertEqual(await plain.run_interaction("test_like", like), ([("b", "100%")], "50%", {}))


class ArgumentTypeTests(PreparedTestCase):
    INSERT = (
        "INSERT INTO typed (id, names, ids, flag, body, note, ratio, raw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, names, ids, flag, body, note, ratio, raw"
    )
    SELECT = "SELECT id FROM typed WHERE note = ANY(%s) OR id = ANY(%s) ORDER BY id"

    async def roundtrip(self, *values):
        def insert(txn):
            txn.execute_prepared("test_typed_insert", self.INSERT, values)
            row = txn.fetchone()
            return row[:7] + (bytes(row[7]) if row[7] is not None else None,)

        return await self.interact("test_typed", insert)

    async def test_values_of_every_kind(self):
        """Ints (beyond 32 bits), text arrays, int arrays into BIGINT[], booleans, JSON text, awkward strings, floats, bytes."""
        body = {"msgtype": "m.text", "body": "it's \\ \"quoted\" – ünïcode", "n": [1, None]}
        note = "O'Reilly; DROP TABLE t; -- \\ %s %% $1"
        got = await self.roundtrip(2**40, ["a", "b'c", ""], [1, 2**40], True, json.dumps(body), note, 0.25, b"\x00\xff")
        self.assertEqual(got, (2**40, ["a", "b'c", ""], [1, 2**40], True, body, note, 0.25, b"\x00\xff"))
        got = await self.roundtrip(7, ["x"], [3], False, "[]", "", -1.5, b"")
        self.assertEqual(got, (7, ["x"], [3], False, [], "", -1.5, b""))

    async def test_empty_lists_and_nulls(self):
        """Empty lists are empty arrays and None is NULL, in every parameter position."""
        self.assertEqual(await self.roundtrip(1, [], [], None, None, None, None, None), (1, [], [], None, None, None, None, None))
        self.assertEqual(
            await self.roundtrip(None, None, None, None, None, None, None, None), (None,) * 8
        )

    async def test_any_with_lists(self):
        """= ANY(%s) takes a list (of any length, empty included) after the statement is prepared."""
        await self.roundtrip(1, [], [], True, None, "one", None, None)
        await self.roundtrip(2, [], [], True, None, "two", None, None)
        await self.roundtrip(3, [], [], True, None, None, None, None)

        def select(txn, notes, ids):
            txn.execute_prepared("test_typed_any", self.SELECT, (notes, ids))
            return [r[0] for r in txn.fetchall()]

        self.assertEqual(await self.interact("test_any", select, ["one"], [3]), [1, 3])
        self.assertEqual(await self.interact("test_any", select, [], []), [])
        self.assertEqual(await self.interact("test_any", select, ["two", "one", "none"], []), [1, 2])
        self.assertEqual(await self.interact("test_any", select, [], [2**40, 2]), [2])

    async def test_parameter_type_from_cast(self):
        """Where the SQL leaves a type open PREPARE fails; a cast in the SQL settles it."""

        def untyped(txn):
            txn.execute_prepared("test_untyped", "SELECT %s IS NULL", (None,))

        with self.assertRaises(psycopg2.errors.IndeterminateDatatype):
            await self.interact("test_untyped", untyped)

        def typed(txn, value):
            txn.execute_prepared("test_typed_null", "SELECT %s::text IS NULL", (value,))
            return txn.fetchone()[0]

        self.assertEqual(await self.interact("test_typed_null", typed, None), True)
        self.assertEqual(await self.interact("test_typed_null", typed, "x"), False)

    async def test_tuples_and_wrong_arity_refused_before_sending(self):
        """A tuple argument (IN-list style), a dict or the wrong count is a TypeError and nothing is prepared."""
        before = sample(PREPARED, name="test_arity")

        def bad(txn, args):
            txn.execute_prepared("test_arity", "SELECT v FROM t WHERE k = ANY(%s) AND v > %s", args)

        for args in ((("a", "b"), 0), (["a"],), (["a"], 0, 1), {"k": 1}, "ab"):
            with self.assertRaises(TypeError):
                await self.interact("test_arity", bad, args)
        self.assertEqual(sample(PREPARED, name="test_arity"), before)
        self.assertNotIn("test_arity", await self.interact("test_listing", server_prepared))


class RegistrationTests(PreparedTestCase):
    async def test_invalid_names_refused(self):
        """Names are lower-case identifiers of at most 63 characters: nothing else reaches the server."""
        for name in ("", "Upper", "1st", "has space", "semi;colon", "dash-ed", "x" * 64, 'q"uote', None):

            def use(txn):
                txn.execute_prepared(name, "SELECT 1")

            with self.assertRaises((ValueError, TypeError)):
                await self.interact("test_bad_name", use)
        self.assertEqual(await self.interact("test_listing", server_prepared), {})

        def longest(txn):
            txn.execute_prepared("x" * 63, "SELECT 1")
            return txn.fetchone()[0]

        self.assertEqual(await self.interact("test_long_name", longest), 1)

    async def test_same_name_two_texts_refused(self):
        """Reusing a name for another SQL text raises PreparedStatementConflict, before and after first use."""

        def use(txn, query):
            txn.execute_prepared("test_conflict", query, ("a",))
            return txn.fetchall()

        self.assertEqual(await self.interact("test_conflict", use, "SELECT v FROM t WHERE k = %s"), [(1,)])
        with self.assertRaises(PreparedStatementConflict):
            await self.interact("test_conflict", use, "SELECT k FROM t WHERE k = %s")
        # An equal text built at run time (a different str object) is the same statement.
        self.assertEqual(await self.interact("test_conflict", use, "".join(["SELECT v FROM t ", "WHERE k = %s"])), [(1,)])
        # A conflicting use fails even on a connection that never prepared the name.
        fresh = Database(self.dsn, reactor, pool_size=1, retry_policy=FAST_RETRIES)
        self.addCleanup(fresh.close)
        with self.assertRaises(PreparedStatementConflict):
            await fresh.run_interaction("test_conflict", use, "SELECT v FROM t WHERE k = %s AND true")

    def test_unsupported_placeholders_refused(self):
        """Named placeholders, stray % and non-str SQL are refused (in the registering thread, before any I/O)."""
        txn = Transaction("test", cursor=None, prepared_statements=set())
        for query in ("SELECT %(k)s", "SELECT 5 % 2", "SELECT '%d'", "SELECT 1 %"):
            self.assertRaises(ValueError, txn.execute_prepared, "test_bad_placeholder", query, ())
        from psycopg2 import sql

        self.assertRaises(TypeError, txn.execute_prepared, "test_composed", sql.SQL("SELECT 1"), ())


class FailureTests(PreparedTestCase):
    async def test_failed_prepare_fails_the_interaction_unretried(self):
        """A PREPARE that fails aborts the attempt like a bad query; the name is not recorded, so each use retries it."""
        calls = []

        def bad(txn):
            calls.append(1)
            txn.execute("INSERT INTO t VALUES ('x', 0)")
            txn.execute_prepared("test_bad_column", "SELECT nope FROM t WHERE k = %s", ("a",))

        for _ in range(2):
            with self.assertRaises(psycopg2.errors.UndefinedColumn):
                await self.interact("test_bad_prepare", bad)
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.rows(), [("a", 1), ("b", 2), ("c", 3)])
        # The connection is healthy and has nothing half-prepared.
        self.assertEqual(await self.interact("test_listing", server_prepared), {})

    async def test_prepared_in_a_rolled_back_transaction_stays_prepared(self):
        """ROLLBACK does not undo PREPARE: the statement is not sent again after the attempt fails."""
        before = sample(PREPARED, name="test_rb_select")

        def then_fail(txn):
            txn.execute_prepared("test_rb_select", SELECT_V, ("a",))
            txn.execute("INSERT INTO t VALUES ('z', 26)")
            raise ValueError("changed my mind")

        with self.assertRaises(ValueError):
            await self.interact("test_rb", then_fail)
        self.assertEqual(self.rows(), [("a", 1), ("b", 2), ("c", 3)])
        self.assertIn("test_rb_select", await self.interact("test_listing", server_prepared))

        def read(txn):
            txn.execute_prepared("test_rb_select", SELECT_V, ("c",))
            return txn.fetchall()

        self.assertEqual(await self.interact("test_rb_read", read), [(3,)])
        self.assertEqual(sample(PREPARED, name="test_rb_select"), before + 1)

    async def test_failed_execute_keeps_statement(self):
        """An EXECUTE that fails (unique violation) leaves the statement prepared and usable."""

        def insert(txn, k):
            txn.execute_prepared("test_insert_kv", "INSERT INTO t (k, v) VALUES (%s, %s)", (k, 9))

        with self.assertRaises(psycopg2.errors.UniqueViolation):
            await self.interact("test_dup", insert, "a")
        before = sample(PREPARED, name="test_insert_kv")
        await self.interact("test_dup", insert, "new")
        self.assertEqual(sample(PREPARED, name="test_insert_kv"), before)
        self.assertIn(("new", 9), self.rows())

    async def test_lost_connection_replaced_and_reprepared(self):
        """A connection killed after preparing is replaced; the retry prepares again on the new one."""
        pids = []
        before = sample(PREPARED, name="test_lost_select")

        def killed_once(txn):
            pids.append(backend_pid(txn))
            txn.execute_prepared("test_lost_select", SELECT_V, ("b",))
            (v,) = txn.fetchone()
            if len(pids) == 1:
                txn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return v, server_prepared(txn)

        v, on_server = await self.interact("test_lost", killed_once)
        self.assertEqual(v, 2)
        self.assertEqual(len(set(pids)), 2)
        self.assertEqual(list(on_server), ["test_lost_select"])
        self.assertEqual(sample(PREPARED, name="test_lost_select"), before + 2)

    async def test_idle_connection_killed_between_interactions(self):
        """A pooled connection whose backend died while idle: the next use reconnects and re-prepares."""

        def read(txn, k):
            txn.execute_prepared("test_idle_select", SELECT_V, (k,))
            return txn.fetchone()[0], backend_pid(txn)

        v, pid = await self.interact("test_idle", read, "a")
        self.assertEqual(v, 1)
        admin = psycopg2.connect(self.dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        before = sample(PREPARED, name="test_idle_select")
        v, new_pid = await self.interact("test_idle", read, "c")
        self.assertEqual(v, 3)
        self.assertNotEqual(new_pid, pid)
        self.assertEqual(sample(PREPARED, name="test_idle_select"), before + 1)

    async def test_schema_change_under_prepared_statement(self):
        """A statement whose result type changed since it was prepared: the connection is replaced and the attempt retried."""
        calls = []

        def read(txn, k):
            calls.append(backend_pid(txn))
            txn.execute_prepared("test_schema_select", SELECT_V, (k,))
            return txn.fetchone()[0]

        self.assertEqual(await self.interact("test_schema", read, "a"), 1)
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE t ALTER COLUMN v TYPE BIGINT")
        conn.close()
        before_retries = sample("estuary_db_transaction_retries_total", name="test_schema", reason="connection")
        before_prepared = sample(PREPARED, name="test_schema_select")
        self.assertEqual(await self.interact("test_schema", read, "b"), 2)
        self.assertEqual(len(calls), 3)
        self.assertEqual(calls[0], calls[1])
        self.assertNotEqual(calls[1], calls[2])
        self.assertEqual(
            sample("estuary_db_transaction_retries_total", name="test_schema", reason="connection"), before_retries + 1
        )
        self.assertEqual(sample(PREPARED, name="test_schema_select"), before_prepared + 1)

    async def test_feature_not_supported_is_retried_at_most_once(self):
        """The same SQLSTATE raised by the query itself fails the interaction: at once when the statement was
        prepared in the attempt, after one retry on a fresh connection when it was prepared earlier."""
        conn = psycopg2.connect(self.dsn)
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE FUNCTION unsupported(x INTEGER) RETURNS INTEGER LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported'; END $$"
            )
        conn.close()
        calls = []

        def unsupported(txn):
            calls.append(backend_pid(txn))
            txn.execute_prepared("test_unsupported", "SELECT unsupported(%s)", (1,))

        with self.assertRaises(psycopg2.errors.FeatureNotSupported):
            await self.interact("test_fns", unsupported)
        self.assertEqual(len(calls), 1)
        with self.assertRaises(psycopg2.errors.FeatureNotSupported):
            await self.interact("test_fns", unsupported)
        self.assertEqual(len(calls), 3)
        self.assertEqual(calls[0], calls[1])
        self.assertNotEqual(calls[1], calls[2])

    async def test_fallback_when_disabled(self):
        """With prepared_statements=False execute_prepared is a plain execute: same rows, nothing prepared."""
        plain = Database(self.dsn, reactor, pool_size=1, retry_policy=FAST_RETRIES, prepared_statements=False)
        self.addCleanup(plain.close)
        before = sample(PREPARED, name="test_plain_select")

        def read(txn, k):
            txn.execute_prepared("test_plain_select", SELECT_V, (k,))
            return txn.fetchall(), server_prepared(txn)

        self.assertEqual(await plain.run_interaction("test_plain", read, "b"), ([(2,)], {}))
        self.assertEqual(await plain.run_interaction("test_plain", read, "b"), ([(2,)], {}))
        self.assertEqual(sample(PREPARED, name="test_plain_select"), before)


class ConcurrencyTests(PreparedTestCase):
    pool_size = 4

    async def test_threads_prepare_per_connection(self):
        """Concurrent first uses on pool_size connections each prepare once on their own session."""
        before = sample(PREPARED, name="test_conc_select")
        barrier = threading.Barrier(self.pool_size, timeout=10)

        def read(txn, k, wait):
            if wait:
                barrier.wait()  # every connection is in use at once, each racing to prepare
            txn.execute_prepared("test_conc_select", SELECT_V, (k,))
            return txn.fetchone()[0], backend_pid(txn), list(server_prepared(txn))

        first = await defer.gatherResults(
            [self.interact("test_conc", read, k, True) for k in ("a", "b", "c", "a")], consumeErrors=True
        )
        self.assertEqual([v for v, _, _ in first], [1, 2, 3, 1])
        self.assertEqual(len({pid for _, pid, _ in first}), self.pool_size)
        self.assertTrue(all(names == ["test_conc_select"] for _, _, names in first))
        self.assertEqual(sample(PREPARED, name="test_conc_select"), before + self.pool_size)
        more = await defer.gatherResults(
            [self.interact("test_conc", read, k, False) for k in "abc" * 10], consumeErrors=True
        )
        self.assertEqual([v for v, _, _ in more], [1, 2, 3] * 10)
        self.assertEqual(sample(PREPARED, name="test_conc_select"), before + self.pool_size)
