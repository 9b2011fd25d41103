"""Prometheus metrics of the bus (registered in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PUBLISHED = Counter(
    "estuary_bus_published_total",
    "Entries written to Redis by this process.",
    ["stream"],
)
CONSUMED = Counter(
    "estuary_bus_consumed_total",
    "Entries delivered to this process' handlers.",
    ["stream", "mode"],  # mode: tail | group
)
GAPS = Counter(
    "estuary_bus_gaps_total",
    "Gaps reported to consumers (they then catch up from PostgreSQL).",
    ["stream", "reason"],
)
RECONNECTS = Counter(
    "estuary_bus_reconnects_total",
    "Redis commands that failed for lack of a connection and were retried after a backoff.",
    ["role"],  # role: publish | tail | group | connect
)
HANDLER_FAILURES = Counter(
    "estuary_bus_group_handler_failures_total",
    "Consumer-group handler calls that failed (the entry stays pending).",
    ["stream"],
)
CONSUMER_LAG = Gauge(
    "estuary_bus_consumer_lag",
    "Positions between a tailing consumer and the last entry of its shard.",
    ["stream", "shard", "consumer"],
)
CPU_SECONDS = Counter(
    "estuary_bus_cpu_seconds_total",
    "CPU time (this thread's, time.thread_time) spent on the bus: publish (encode, queue, XADD), "
    "consume (XREAD/XREADGROUP/XACK, decode, tail handlers; not consumer-group handlers), "
    "marks (read-your-writes marks), control (epochs, PING, last IDs).",
    ["op"],
)
