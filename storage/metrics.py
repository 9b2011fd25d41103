"""Prometheus metrics of the storage layer.

Defined once per process on the default registry; every :class:`Database`
instance of the process contributes to the same series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSACTION_DURATION = Histogram(
    "estuary_db_transaction_duration_seconds",
    "Wall time of a named database interaction, retries and backoff included.",
    ["name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

TRANSACTION_RETRIES = Counter(
    "estuary_db_transaction_retries_total",
    "Attempts of a named interaction that failed transiently and were retried.",
    ["name", "reason"],
)

TRANSACTION_FAILURES = Counter(
    "estuary_db_transaction_failures_total",
    "Named interactions that finally failed (their error reached the caller).",
    ["name", "reason"],
)

POOL_SIZE = Gauge(
    "estuary_db_pool_size",
    "Maximum number of connections (and database threads) of the open pools.",
)

POOL_CONNECTIONS_OPEN = Gauge(
    "estuary_db_pool_connections_open",
    "PostgreSQL connections currently open by the pool.",
)

POOL_CONNECTIONS_IN_USE = Gauge(
    "estuary_db_pool_connections_in_use",
    "Pool connections currently running a transaction.",
)

POOL_INTERACTIONS_QUEUED = Gauge(
    "estuary_db_pool_interactions_queued",
    "Transaction attempts waiting for a free database thread.",
)

STATEMENTS_PREPARED = Counter(
    "estuary_db_statements_prepared_total",
    "PREPAREs sent for a named prepared statement (once per pooled connection that runs it).",
    ["name"],
)
