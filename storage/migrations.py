"""Schema migrations: numbered SQL files applied in order at startup.

``storage/schema/NNNN_name.sql`` files are numbered from 0001 without gaps.
:func:`prepare_database` takes a PostgreSQL advisory lock (so several
workers starting together apply each file exactly once), creates the
``schema_version`` table if needed, refuses a database whose recorded version
is newer than the newest file this code ships, and applies every missing file
in its own transaction together with its ``schema_version`` row.

Files are applied exactly as written; they must not contain their own
``BEGIN``/``COMMIT``.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import attrs
import psycopg2
import psycopg2.extensions
from twisted.internet import defer
from twisted.logger import Logger

from storage.database import Database, StorageError

log = Logger()

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")

# Key of the session-level advisory lock held while migrating. Any constant
# works as long as nothing else in the database uses it: this one is the
# ASCII bytes of "estuschm" read as a big-endian 64-bit integer.
MIGRATION_LOCK_KEY = int.from_bytes(b"estuschm", "big", signed=True)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(StorageError):
    """The schema files or the database's recorded schema are inconsistent."""


class SchemaTooNewError(SchemaError):
    """The database was migrated by newer code than this; refusing to run against it."""

    def __init__(self, database_version: int, code_version: int):
        super().__init__(
            f"database schema is at version {database_version} but this code only knows up to "
            f"{code_version}; upgrade Estuary (or point it at the right database)"
        )
        self.database_version = database_version
        self.code_version = code_version


@attrs.frozen
class Migration:
    """One schema file."""

    version: int
    name: str
    path: str

    def read(self) -> str:
        """The SQL text of the file."""
        with open(self.path, encoding="utf-8") as f:
            return f.read()


def parse_migration_names(file_names: Sequence[str]) -> list[tuple[int, str, str]]:
    """Validate schema file names; return ``(version, name, file_name)`` sorted by version.

    Non-``.sql`` files are ignored. Raises :class:`SchemaError` for a ``.sql``
    file not named ``NNNN_name.sql``, a duplicated number, or a gap in the
    numbering (which must start at 1).
    """
    found: dict[int, tuple[int, str, str]] = {}
    for file_name in file_names:
        if not file_name.endswith(".sql"):
            continue
        m = _FILE_NAME.match(file_name)
        if m is None:
            raise SchemaError(f"schema file {file_name!r} is not named NNNN_lowercase_name.sql")
        version = int(m.group(1))
        if version in found:
            raise SchemaError(f"schema files {found[version][2]!r} and {file_name!r} share version {version}")
        found[version] = (version, m.group(2), file_name)
    ordered = [found[v] for v in sorted(found)]
    for expected, (version, _, file_name) in enumerate(ordered, start=1):
        if version != expected:
            raise SchemaError(f"schema versions must run 1, 2, 3... without gaps; found {file_name!r} at {expected}")
    return ordered


def load_migrations(schema_dir: str = SCHEMA_DIR) -> list[Migration]:
    """The migrations in ``schema_dir``, in order."""
    return [
        Migration(version, name, os.path.join(schema_dir, file_name))
        for version, name, file_name in parse_migration_names(os.listdir(schema_dir))
    ]


#: The newest schema version this code knows.
SCHEMA_VERSION = len(load_migrations())


def pending_migrations(
    migrations: Sequence[Migration], recorded: Sequence[tuple[int, str]]
) -> list[Migration]:
    """The migrations still to apply, given the ``(version, name)`` rows of ``schema_version``.

    Raises :class:`SchemaTooNewError` when the database is ahead of the code,
    and :class:`SchemaError` when the recorded history is not a prefix of the
    code's files (a gap, or a version applied under another name: e.g. two
    branches that each added their own 0002 file).
    """
    code_version = migrations[-1].version if migrations else 0
    database_version = max((v for v, _ in recorded), default=0)
    if database_version > code_version:
        raise SchemaTooNewError(database_version, code_version)
    names = dict(recorded)
    for migration in migrations[:database_version]:
        if migration.version not in names:
            raise SchemaError(f"schema version {migration.version} was never applied but later ones were")
        if names[migration.version] != migration.name:
            raise SchemaError(
                f"schema version {migration.version} was applied as {names[migration.version]!r} "
                f"but this code calls it {migration.name!r}"
            )
    return list(migrations[database_version:])


def prepare_database_on_connection(
    conn: psycopg2.extensions.connection, schema_dir: str = SCHEMA_DIR
) -> int:
    """Bring the database of ``conn`` up to date; return the resulting schema version.

    Blocking. ``conn`` must not be in a transaction; it is left in autocommit
    mode. Serialised against concurrent callers with ``pg_advisory_lock``.
    """
    migrations = load_migrations(schema_dir)
    conn.rollback()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            cur.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_version (
                    version INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )
                """
            )
            cur.execute("SELECT version, name FROM schema_version")
            recorded = cur.fetchall()
            todo = pending_migrations(migrations, recorded)
            current = max((v for v, _ in recorded), default=0)
            conn.autocommit = False
            for migration in todo:
                log.info(
                    "Applying schema migration {version:04d}_{name}", version=migration.version, name=migration.name
                )
                try:
                    cur.execute(migration.read())
                    cur.execute(
                        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                current = migration.version
            return current
        finally:
            if conn.closed == 0:
                conn.rollback()
                conn.autocommit = True
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def prepare_database(db: Database, schema_dir: str = SCHEMA_DIR) -> "defer.Deferred[int]":
    """Apply pending migrations to ``db``'s database; fires with the resulting schema version.

    Runs on a dedicated connection (a session-level advisory lock must not be
    left behind on a pooled one). Fails with :class:`SchemaTooNewError` if
    the database is newer than the code.
    """
    return db.run_with_new_connection(prepare_database_on_connection, schema_dir)
