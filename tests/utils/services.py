"""Where the integration tests find PostgreSQL and Redis.

``scripts/test`` starts throwaway servers and exports their addresses in
``ESTUARY_TEST_POSTGRES`` (a libpq DSN or URL naming a database the tests may
create databases from) and ``ESTUARY_TEST_REDIS`` (a ``redis://`` URL). When
they are unset (a developer running ``trial`` by hand) the machine's default
local servers are used.

Each test gets its own database (created from the DSN's server, dropped on
cleanup) and its own Redis logical database number, so tests never see one
another's rows or keys.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def postgres_admin_dsn() -> str:
    """The DSN of a database on the test server from which others are created."""
    return os.environ.get("ESTUARY_TEST_POSTGRES", DEFAULT_POSTGRES)


def redis_url() -> str:
    """The base Redis URL for tests."""
    return os.environ.get("ESTUARY_TEST_REDIS", DEFAULT_REDIS)


def dsn_for_database(dbname: str) -> str:
    """The admin DSN with its database name replaced by ``dbname``."""
    dsn = postgres_admin_dsn()
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path="/" + dbname))
    words = [w for w in dsn.split() if not w.startswith("dbname=")]
    return " ".join(words + [f"dbname={dbname}"])


def create_test_database(testcase) -> str:
    """Create an empty database for ``testcase``; drop it at cleanup.

    Returns its DSN. Runs synchronously (psycopg2, autocommit) because it is
    set-up, not code under test.
    """
    import psycopg2

    name = "estuary_test_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(postgres_admin_dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        # Identifiers cannot be bound as parameters; the name is generated
        # above from hex digits only.
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY ENCODING \'UTF8\' LC_COLLATE \'C\' LC_CTYPE \'C\'')
    admin.close()

    def drop():
        conn = psycopg2.connect(postgres_admin_dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    testcase.addCleanup(drop)
    return dsn_for_database(name)


_next_redis_db = [1]


def redis_test_url(testcase) -> str:
    """A Redis URL on a logical database of its own, flushed before and after.

    Databases 1..15 are handed out in turn; tests run sequentially under
    trial, so two live tests never share one.
    """
    import redis

    base = urlsplit(redis_url())
    db = _next_redis_db[0]
    _next_redis_db[0] = db % 15 + 1
    url = urlunsplit(base._replace(path=f"/{db}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()

    def flush():
        c = redis.Redis.from_url(url)
        try:
            c.flushdb()
        finally:
            c.close()

    testcase.addCleanup(flush)
    return url
