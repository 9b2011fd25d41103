"""PostgreSQL storage: connection pool, named transactions, migrations, stream positions.

Only this package knows the database driver. See ``storage.database`` for
``Database.run_interaction``, ``storage.migrations`` for ``prepare_database``
and ``storage.streams`` for shard sequences and ordered position release.
"""
