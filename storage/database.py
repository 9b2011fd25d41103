"""The PostgreSQL connection pool and named, retried transactions.

Blocking psycopg2 calls run on a thread pool owned by :class:`Database`; the
reactor only sees Deferreds. One connection per pool thread, opened lazily and
replaced when it breaks.

A store method looks like::

    def _insert_thing(txn: Transaction, thing_id: str) -> int:
        txn.execute("INSERT INTO things (id) VALUES (%s) RETURNING n", (thing_id,))
        (n,) = txn.fetchone()
        txn.call_after(cache.invalidate, thing_id)
        return n

    n = await db.run_interaction("insert_thing", _insert_thing, thing_id)

The function may run more than once (transient failures are retried), so it
must not have side effects outside the transaction; register those with
:meth:`Transaction.call_after` instead.

Prepared statements
-------------------

psycopg2 sends every statement as text, so PostgreSQL parses, analyses and
plans it on every call; for the short hot queries (an event range of a room,
the access-token lookup, a membership lookup...) planning costs more than
executing. A call site can opt in to a named server-side prepared statement::

    txn.execute_prepared(
        "events_after", "SELECT event_id FROM events WHERE room_id = %s AND stream_position > %s", (room_id, pos)
    )

The name is a constant of the call site (a lower-case identifier, validated)
and names that SQL text process-wide: reusing a name with a different text
raises :class:`PreparedStatementConflict` before anything is sent. The first
use on a connection sends ``PREPARE name AS <sql with %s as $1..$n>``, later
ones ``EXECUTE name (%s, ...)``; each pooled connection remembers which names
it has prepared (a new or replacing connection starts with none). Arguments are
still adapted by psycopg2 (lists become ``ARRAY[...]``, None ``NULL``...) and
coerced to the parameter types PostgreSQL inferred at PREPARE; where the SQL
leaves a parameter's type open, cast it (``%s::text``). Tuples (``IN %s``) and
named parameters are refused. PREPARE is not undone by ROLLBACK, so a statement
prepared by an attempt that rolled back stays prepared and is not sent again.
If the schema changes under a prepared statement so that its result type
changes (PostgreSQL then refuses to EXECUTE it), the connection is replaced
and the attempt retried like after a lost connection.
PostgreSQL plans the first five executions of a statement with their values
and then switches to a cached generic plan if it is not costlier: that is
where planning time is saved, so prepare only queries whose best plan does not
depend much on the values. ``Database(prepared_statements=False)`` (config
``database.prepared_statements``) makes ``execute_prepared`` a plain execute,
for poolers that do not keep sessions or for comparison.
"""

from __future__ import annotations

import enum
import inspect
import random
import re
import threading
from typing import Any, Callable, Sequence, TypeVar

import attrs
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from storage import metrics
from storage.retry import FailureKind, RetryPolicy, classify_failure

R = TypeVar("R")

log = Logger()

Query = str | sql.Composable


class StorageError(Exception):
    """Base class of the errors the storage layer raises itself."""


class DatabaseClosedError(StorageError):
    """An interaction was requested after :meth:`Database.close`."""


class CommitOutcomeUnknownError(StorageError):
    """The connection dropped while COMMIT was in flight.

    The transaction may or may not have been committed; retrying could apply
    it twice, so it is not retried. Callers that need to know must re-read.
    """

    def __init__(self, name: str):
        super().__init__(f"connection lost while committing transaction {name!r}; outcome unknown")
        self.name = name


class PreparedStatementConflict(StorageError, ValueError):
    """One prepared statement name was used with two different SQL texts."""


_STATEMENT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_PLACEHOLDER = re.compile(r"%(.|\Z)", re.DOTALL)


@attrs.frozen
class _PreparedStatement:
    """A named statement: the SQL as the call site wrote it, and what is sent for it."""

    name: str
    query: str
    params: int
    prepare: str  # PREPARE name AS <query with $1..$n>
    execute: str  # EXECUTE name (%s, ...), adapted by psycopg2


_statements: dict[str, _PreparedStatement] = {}
_statements_lock = threading.Lock()


def _compile_statement(name: str, query: str) -> _PreparedStatement:
    if not isinstance(name, str) or not _STATEMENT_NAME.match(name):
        raise ValueError(f"prepared statement name must be a lower-case SQL identifier, got {name!r}")
    if not isinstance(query, str):
        raise TypeError(f"prepared statement {name!r} needs its SQL as a str, got {type(query).__name__}")
    params = 0

    def replace(m: re.Match) -> str:
        nonlocal params
        if m.group(1) == "%":
            return "%"
        if m.group(1) == "s":
            params += 1
            return f"${params}"
        raise ValueError(
            f"prepared statement {name!r}: only %s placeholders and %% are supported, found %{m.group(1)}"
        )

    body = _PLACEHOLDER.sub(replace, query)
    # The name is validated above, so it can be spelled into the statement as is.
    execute = f"EXECUTE {name} ({', '.join(['%s'] * params)})" if params else f"EXECUTE {name}"
    return _PreparedStatement(name, query, params, f"PREPARE {name} AS {body}", execute)


def _prepared_statement(name: str, query: str) -> _PreparedStatement:
    """The statement registered under ``name``, registering ``query`` on first use."""
    stmt = _statements.get(name)
    if stmt is None:
        compiled = _compile_statement(name, query)
        with _statements_lock:
            stmt = _statements.setdefault(name, compiled)
    if stmt.query is not query and stmt.query != query:
        raise PreparedStatementConflict(
            f"prepared statement name {name!r} is already used for {stmt.query!r}; cannot also use it for {query!r}"
        )
    return stmt


class _Connection(psycopg2.extensions.connection):
    """A pooled connection: remembers the prepared statements its session holds."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prepared_statements: set[str] = set()


class IsolationLevel(enum.Enum):
    """Transaction isolation levels an interaction may ask for."""

    READ_COMMITTED = psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
    REPEATABLE_READ = psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ
    SERIALIZABLE = psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE


@attrs.frozen
class _Callback:
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict


class Transaction:
    """What an interaction function receives: a cursor inside one transaction.

    Thin on purpose. Values are always passed as parameters (``%s``), never
    formatted into the query; identifiers go through :mod:`psycopg2.sql`.
    """

    def __init__(
        self, name: str, cursor: psycopg2.extensions.cursor, prepared_statements: set[str] | None = None
    ):
        self.name = name
        self._cursor = cursor
        # The names prepared in this connection's session; None: do not prepare.
        self._prepared = prepared_statements
        # Set when this connection's session can no longer serve its prepared
        # statements: the pool then replaces it and the attempt is retried.
        self._replace_connection = False
        self._after: list[_Callback] = []
        self._on_exception: list[_Callback] = []

    def execute(self, query: Query, args: Sequence[Any] | dict[str, Any] | None = None) -> None:
        """Run one statement with bound parameters."""
        self._cursor.execute(query, args)

    def execute_prepared(self, name: str, query: str, args: Sequence[Any] = ()) -> None:
        """Run ``query`` (``%s`` placeholders) as the server-side prepared statement ``name``.

        ``name`` is a constant of the call site naming exactly this SQL text
        (see the module docstring). Results are read as after :meth:`execute`.
        """
        stmt = _prepared_statement(name, query)
        if isinstance(args, (str, bytes, dict)) or not isinstance(args, Sequence):
            raise TypeError(f"prepared statement {name!r} takes a sequence of positional arguments, got {args!r}")
        if len(args) != stmt.params:
            raise TypeError(f"prepared statement {name!r} takes {stmt.params} arguments, got {len(args)}")
        for arg in args:
            if isinstance(arg, tuple):
                # psycopg2 renders a tuple as a row constructor (for IN %s),
                # which is no value for a parameter; = ANY(%s) takes a list.
                raise TypeError(f"prepared statement {name!r}: pass lists, not tuples, got {arg!r}")
        if self._prepared is None:
            self._cursor.execute(query, args)  # even empty: %% must mean % as in the prepared text
            return
        prepared_earlier = name in self._prepared
        if not prepared_earlier:
            self._cursor.execute(stmt.prepare)
            # PREPARE is not transactional: the statement exists from here on
            # even if this transaction rolls back.
            self._prepared.add(name)
            metrics.STATEMENTS_PREPARED.labels(name).inc()
        try:
            self._cursor.execute(stmt.execute, args)
        except psycopg2.errors.FeatureNotSupported:
            if prepared_earlier:
                # "cached plan must not change result type": the schema changed
                # under a statement prepared by an earlier transaction. It cannot
                # be deallocated in this aborted transaction; a new session
                # prepares it afresh, so replace the connection and retry.
                self._replace_connection = True
            raise

    def execute_values(
        self,
        query: Query,
        argslist: Sequence[Sequence[Any]],
        template: str | None = None,
        page_size: int = 100,
        fetch: bool = False,
    ) -> list[tuple] | None:
        """Run a multi-row statement (``VALUES %s``) via ``psycopg2.extras.execute_values``.

        With ``fetch=True`` returns the rows of every page (for ``RETURNING``).
        """
        return psycopg2.extras.execute_values(
            self._cursor, query, argslist, template=template, page_size=page_size, fetch=fetch
        )

    def fetchone(self) -> tuple | None:
        """The next row of the last statement, or None."""
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        """The remaining rows of the last statement."""
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        """Rows produced or affected by the last statement (-1 if unknown)."""
        return self._cursor.rowcount

    def call_after(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` on the reactor once this transaction has committed.

        Callbacks run in registration order, before the interaction's Deferred
        fires. They never run for an attempt that rolled back (a retried
        attempt's callbacks are dropped with it). Use this to publish to the
        bus or invalidate caches: nothing is announced that is not committed.
        """
        self._after.append(_Callback(callback, args, kwargs))

    def call_on_exception(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``callback(*args, **kwargs)`` on the reactor if this attempt rolls back.

        Fires for every attempt that fails, including attempts that are then
        retried (each retry runs the function again and registers afresh),
        and when the commit outcome is unknown. Used to release resources
        reserved inside the attempt, such as stream positions.
        """
        self._on_exception.append(_Callback(callback, args, kwargs))


@attrs.frozen
class _Outcome:
    """The result of one attempt, handed from the database thread to the reactor."""

    value: Any = None
    error: BaseException | None = None
    kind: FailureKind | None = None
    commit_unknown: bool = False
    after: Sequence[_Callback] = ()
    on_exception: Sequence[_Callback] = ()


class _ConnectionPool:
    """Thread-safe pool of psycopg2 connections, opened on demand, at most ``size``."""

    def __init__(self, connect: Callable[[], psycopg2.extensions.connection], size: int):
        self._connect = connect
        self._size = size
        self._lock = threading.Lock()
        self._idle: list[psycopg2.extensions.connection] = []
        self._open = 0

    def connect(self) -> psycopg2.extensions.connection:
        """A new connection outside the pool's accounting."""
        return self._connect()

    def take(self) -> psycopg2.extensions.connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._open >= self._size:
                # Cannot happen while threads <= size; a bug if it does.
                raise RuntimeError("connection pool exhausted")
            self._open += 1
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
            raise
        metrics.POOL_CONNECTIONS_OPEN.inc()
        return conn

    def give_back(self, conn: psycopg2.extensions.connection) -> None:
        with self._lock:
            self._idle.append(conn)

    def discard(self, conn: psycopg2.extensions.connection) -> None:
        with self._lock:
            self._open -= 1
        metrics.POOL_CONNECTIONS_OPEN.dec()
        _close_quietly(conn)

    def close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        metrics.POOL_CONNECTIONS_OPEN.dec(len(idle))
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: psycopg2.extensions.connection) -> None:
    # Its session, and every statement prepared in it, ends here.
    prepared = getattr(conn, "prepared_statements", None)
    if prepared is not None:
        prepared.clear()
    try:
        conn.close()
    except psycopg2.Error:
        pass


class Database:
    """A pool of PostgreSQL connections that runs named transactions off the reactor thread.

    ``reactor`` must provide time, threads (``callFromThread``) and system
    event triggers; the pool's threads are stopped at reactor shutdown if
    :meth:`close` was not called first.
    """

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        pool_size: int = 10,
        *,
        retry_policy: RetryPolicy = RetryPolicy(),
        jitter: Callable[[], float] = random.random,
        application_name: str = "estuary",
        connect_timeout: int = 10,
        prepared_statements: bool = True,
    ):
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.dsn = dsn
        self._reactor = reactor
        self._retry_policy = retry_policy
        self._jitter = jitter
        self._pool = _ConnectionPool(
            lambda: psycopg2.connect(
                dsn, connection_factory=_Connection, application_name=application_name, connect_timeout=connect_timeout
            ),
            pool_size,
        )
        self._prepare_statements = prepared_statements
        self._threadpool = ThreadPool(minthreads=0, maxthreads=pool_size, name="estuary-db")
        self._threadpool.start()
        self._pool_size = pool_size
        metrics.POOL_SIZE.inc(pool_size)
        self._closed = False
        self._shutdown_trigger = reactor.addSystemEventTrigger("during", "shutdown", self.close)

    def run_interaction(
        self,
        name: str,
        fn: Callable[..., R],
        *args: Any,
        isolation_level: IsolationLevel = IsolationLevel.READ_COMMITTED,
        **kwargs: Any,
    ) -> "defer.Deferred[R]":
        """Run ``fn(txn, *args, **kwargs)`` in a transaction on a database thread.

        Commits if ``fn`` returns (the Deferred fires with its return value
        after the ``call_after`` callbacks ran), rolls back and re-raises if
        it raises. Serialization failures, deadlocks and lost connections
        (before COMMIT was sent) are retried with backoff per the retry
        policy; a connection lost during COMMIT raises
        :class:`CommitOutcomeUnknownError`. ``name`` labels the metrics and
        logs: keep it a constant per call site.
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError("run_interaction needs a blocking function, not a coroutine function")
        return defer.Deferred.fromCoroutine(
            self._run(name, fn, args, kwargs, isolation_level, self._retry_policy)
        )

    def ping(self) -> "defer.Deferred[bool]":
        """Whether a trivial query succeeds now (for readiness checks); never fails."""

        def select_one(txn: Transaction) -> bool:
            txn.execute("SELECT 1")
            return txn.fetchone() == (1,)

        async def ping() -> bool:
            try:
                return await self._run(
                    "ping", select_one, (), {}, IsolationLevel.READ_COMMITTED, RetryPolicy(max_attempts=1)
                )
            except Exception:
                return False

        return defer.Deferred.fromCoroutine(ping())

    def run_with_new_connection(
        self, fn: Callable[..., R], *args: Any, **kwargs: Any
    ) -> "defer.Deferred[R]":
        """Run ``fn(conn, *args, **kwargs)`` on a database thread with a fresh, unpooled connection.

        For work that changes session state (advisory locks, autocommit), such
        as migrations. No retries and no transaction handling: ``fn`` owns the
        connection, which is closed afterwards.
        """
        if self._closed:
            return defer.fail(DatabaseClosedError("database closed"))

        def run() -> R:
            conn = self._pool.connect()
            try:
                return fn(conn, *args, **kwargs)
            finally:
                _close_quietly(conn)

        return threads.deferToThreadPool(self._reactor, self._threadpool, run)

    def close(self) -> None:
        """Stop the threads (waiting for attempts in progress) and close every connection.

        Idempotent. Interactions requested afterwards fail with
        :class:`DatabaseClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        except (ValueError, KeyError):
            pass  # Called from that very trigger, which is already removed.
        self._threadpool.stop()
        self._pool.close_idle()
        metrics.POOL_SIZE.dec(self._pool_size)

    async def _run(
        self,
        name: str,
        fn: Callable[..., R],
        args: tuple,
        kwargs: dict,
        isolation_level: IsolationLevel,
        policy: RetryPolicy,
    ) -> R:
        start = self._reactor.seconds()
        failures = 0
        try:
            while True:
                if self._closed:
                    raise DatabaseClosedError(f"database closed; cannot run {name!r}")
                metrics.POOL_INTERACTIONS_QUEUED.inc()
                outcome: _Outcome = await threads.deferToThreadPool(
                    self._reactor, self._threadpool, self._attempt, name, fn, args, kwargs, isolation_level
                )
                if outcome.error is None:
                    _run_callbacks(name, outcome.after)
                    return outcome.value
                _run_callbacks(name, outcome.on_exception)
                failures += 1
                assert outcome.kind is not None
                if outcome.commit_unknown:
                    metrics.TRANSACTION_FAILURES.labels(name, "commit_unknown").inc()
                    raise CommitOutcomeUnknownError(name) from outcome.error
                if not policy.should_retry(outcome.kind, failures):
                    metrics.TRANSACTION_FAILURES.labels(name, outcome.kind.value).inc()
                    raise outcome.error
                delay = policy.delay(failures, self._jitter())
                metrics.TRANSACTION_RETRIES.labels(name, outcome.kind.value).inc()
                log.info(
                    "Retrying transaction {name} after {kind} failure {failures} in {delay:.3f}s: {error}",
                    name=name,
                    kind=outcome.kind.value,
                    failures=failures,
                    delay=delay,
                    error=outcome.error,
                )
                await task.deferLater(self._reactor, delay)
        finally:
            metrics.TRANSACTION_DURATION.labels(name).observe(self._reactor.seconds() - start)

    def _attempt(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        isolation_level: IsolationLevel,
    ) -> _Outcome:
        """One attempt, on a database thread. Never raises: failures are returned."""
        metrics.POOL_INTERACTIONS_QUEUED.dec()
        try:
            conn = self._pool.take()
        except psycopg2.Error as e:
            return _Outcome(error=e, kind=FailureKind.CONNECTION)
        metrics.POOL_CONNECTIONS_IN_USE.inc()
        txn: Transaction | None = None
        committing = False
        broken = False
        try:
            conn.set_session(isolation_level=isolation_level.value)
            with conn.cursor() as cursor:
                txn = Transaction(
                    name, cursor, conn.prepared_statements if self._prepare_statements else None
                )
                value = fn(txn, *args, **kwargs)
                if isinstance(value, defer.Deferred) or inspect.isawaitable(value):
                    raise TypeError(f"interaction {name!r} returned {value!r}: it must block, not return an awaitable")
                committing = True
                conn.commit()
            return _Outcome(value=value, after=tuple(txn._after))
        except BaseException as e:
            broken = conn.closed != 0 or (txn is not None and txn._replace_connection)
            if not broken:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
            return _Outcome(
                error=e,
                kind=classify_failure(e, broken),
                commit_unknown=committing and broken,
                on_exception=tuple(txn._on_exception) if txn is not None else (),
            )
        finally:
            metrics.POOL_CONNECTIONS_IN_USE.dec()
            if broken or (txn is not None and txn._replace_connection):
                self._pool.discard(conn)
                # If one connection died the server probably restarted and the
                # idle ones are dead too (or, for a stale prepared statement,
                # hold the same stale statements); drop them rather than let
                # the retries of this interaction discover them one by one.
                self._pool.close_idle()
            else:
                self._pool.give_back(conn)


def _run_callbacks(name: str, callbacks: Sequence[_Callback]) -> None:
    """Run post-transaction callbacks on the reactor; one failing does not stop the rest."""
    for cb in callbacks:
        try:
            cb.fn(*cb.args, **cb.kwargs)
        except Exception:
            log.failure("Callback {callback!r} after transaction {name} failed", callback=cb.fn, name=name)
