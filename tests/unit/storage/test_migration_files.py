"""Validation of schema file names and the choice of pending migrations (no database)."""

import os

from twisted.trial import unittest

from storage.migrations import (
    SCHEMA_DIR,
    SCHEMA_VERSION,
    Migration,
    SchemaError,
    SchemaTooNewError,
    load_migrations,
    parse_migration_names,
    pending_migrations,
)


class ParseNamesTests(unittest.TestCase):
    def test_sorted_and_non_sql_ignored(self):
        """Files are ordered by number; other files are ignored."""
        self.assertEqual(
            parse_migration_names(["0002_rooms.sql", "README.md", "0001_streams.sql"]),
            [(1, "streams", "0001_streams.sql"), (2, "rooms", "0002_rooms.sql")],
        )

    def test_bad_names(self):
        """A .sql file not named NNNN_lowercase.sql is an error, not silently skipped."""
        for bad in ("1_streams.sql", "0001-streams.sql", "0001_Streams.sql", "0001_.sql", "streams.sql"):
            self.assertRaises(SchemaError, parse_migration_names, [bad])

    def test_duplicates_and_gaps(self):
        """Two files with one number, a gap, or not starting at 1 are refused."""
        self.assertRaises(SchemaError, parse_migration_names, ["0001_a.sql", "0001_b.sql"])
        self.assertRaises(SchemaError, parse_migration_names, ["0001_a.sql", "0003_c.sql"])
        self.assertRaises(SchemaError, parse_migration_names, ["0002_b.sql"])

    def test_shipped_schema(self):
        """The shipped schema directory is valid and SCHEMA_VERSION is its newest file."""
        migrations = load_migrations()
        self.assertEqual(SCHEMA_VERSION, migrations[-1].version)
        self.assertEqual(migrations[0].name, "streams")
        self.assertTrue(all(os.path.dirname(m.path) == SCHEMA_DIR for m in migrations))


class PendingTests(unittest.TestCase):
    migrations = [Migration(1, "a", "/x/0001_a.sql"), Migration(2, "b", "/x/0002_b.sql")]

    def test_pending(self):
        """Only files newer than the database's version are applied."""
        self.assertEqual(pending_migrations(self.migrations, []), self.migrations)
        self.assertEqual(pending_migrations(self.migrations, [(1, "a")]), self.migrations[1:])
        self.assertEqual(pending_migrations(self.migrations, [(2, "b"), (1, "a")]), [])

    def test_too_new(self):
        """A database ahead of the code is refused with both versions in the error."""
        e = self.assertRaises(
            SchemaTooNewError, pending_migrations, self.migrations, [(1, "a"), (2, "b"), (3, "c")]
        )
        self.assertEqual((e.database_version, e.code_version), (3, 2))
        self.assertIn("version 3", str(e))

    def test_diverged_history(self):
        """A version recorded under another name, or a hole in the history, is refused."""
        self.assertRaises(SchemaError, pending_migrations, self.migrations, [(1, "other")])
        self.assertRaises(SchemaError, pending_migrations, self.migrations, [(2, "b")])
