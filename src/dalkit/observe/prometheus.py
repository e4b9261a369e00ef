"""A ``prometheus_client`` collector for one or more databases (a ``database`` label): pool
gauges and counters, transactions and their latency histogram, query histograms per operation,
failed statements per operation and error class, slow queries, N+1 detections, the query
cache, read replicas and the outbox backlog. Labels hold names chosen here or by you (a
replica's ``host:port``) or error class names, never URLs, credentials or error messages.

Needs the ``prometheus-client`` package. Counters read from ``pool_stats()`` start over when
the application calls ``pop_stats()``, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from dalkit.extras import missing_extra

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import make_asgi_app as _make_asgi_app
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ModuleNotFoundError as exc:  # a core install: say which extra brings it
    raise missing_extra("dalkit.observe.prometheus", "prometheus", exc) from exc


from dalkit.errors import ConfigurationError, DalkitError
from dalkit.observe.install import Observer, ObserveSettings, install, observer_for

__all__ = ["DalkitCollector", "make_asgi_app", "register", "start_http_server"]

log = logging.getLogger("dalkit.observe")

_POOL_GAUGES = (
    ("pool_size", "pool_size", "Connections the pool keeps open"),
    ("pool_available", "pool_available", "Idle connections in the pool"),
    ("pool_checked_out", "checked_out", "Connections in use"),
    ("pool_overflow", "overflow", "Connections open beyond pool_size"),
    ("pool_requests_waiting", "requests_waiting", "Requests waiting for a connection"),
)
# name, pool_stats key, scale to base units, help
_POOL_COUNTERS = (
    ("pool_requests", "requests_num", 1.0, "Connection requests served or failed"),
    ("pool_wait_seconds", "requests_wait_ms", 0.001, "Time spent waiting for a connection"),
    ("pool_timeouts", "requests_timeouts", 1.0, "Connection requests that timed out"),
    ("pool_connections_opened", "connections_num", 1.0, "Connections opened"),
    ("pool_connection_errors", "connections_errors", 1.0, "Failed attempts to open one"),
    ("pool_connections_lost", "connections_lost", 1.0, "Connections invalidated"),
    ("pool_hold_seconds", "usage_ms", 0.001, "Time connections were held"),
)


class _Source:
    def __init__(self, database: Any, observer: Observer, outbox: bool) -> None:
        self.database = database
        self.observer = observer
        self.outbox = outbox


class DalkitCollector(Collector):
    """Collects from every database added with ``add``, labelled by name.

    Examples:
        ```python test="skip"
        from prometheus_client import REGISTRY

        collector = DalkitCollector()
        collector.add(db, "orders")
        REGISTRY.register(collector)  # or simply: register(db, "orders")
        ```
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}

    def add(self, database: Any, name: str | None = None, *, outbox: bool = False) -> str:
        """Collect from ``database`` under ``name``.

        Args:
            database: A Database or AsyncDatabase; its cache and replica figures are
                collected when it has them.
            name: The ``database`` label; default: the database name of its URL (the file
                name for SQLite).
            outbox: Add the transactional outbox's backlog, read with one query per scrape
                (sync Database only).

        Returns:
            The label.

        Raises:
            ConfigurationError: An empty name, one already used by another database, or
                ``outbox`` with an AsyncDatabase.
        """
        if outbox and hasattr(database.engine, "sync_engine"):
            raise ConfigurationError(
                "outbox metrics read the outbox with a sync Database; for an AsyncDatabase, "
                "register a Database on the same URL with outbox=True"
            )
        label = name if name is not None else _default_name(database)
        if not isinstance(label, str) or not label:
            raise ConfigurationError("a database's metrics name must be a non-empty string")
        observer = observer_for(database.engine)
        if observer is None:
            observer = install(database.engine, ObserveSettings(query_stats=False))
        observer.enable_metrics()
        with self._lock:
            if label in self._sources and self._sources[label].database is not database:
                raise ConfigurationError(
                    f"another database is already collected as {label!r}; pass name=..."
                )
            self._sources[label] = _Source(database, observer, outbox)
        return label

    def remove(self, name: str) -> None:
        """Stop collecting the database labelled ``name`` (nothing if there is none)."""
        with self._lock:
            self._sources.pop(name, None)

    def describe(self) -> list[Metric]:
        """Nothing: the families depend on the databases added later."""
        # the families depend on the databases added later: nothing to check at registration
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, read from each database's statistics now."""
        with self._lock:
            sources = sorted(self._sources.items())
        families: dict[str, Metric] = {}

        def family(name: str, kind: Callable[..., Metric], doc: str, *labels: str) -> Any:
            if name not in families:
                families[name] = kind(f"dalkit_{name}", doc, labels=["database", *labels])
            return families[name]

        for label, source in sources:
            database = source.database
            _collect_pool(family, label, database.pool_stats())
            _collect_transactions(family, label, database.transaction_stats())
            _collect_queries(family, label, source.observer)
            areas = database.get_stats() if hasattr(database, "get_stats") else {}
            if areas.get("cache"):
                _collect_cache(family, label, areas["cache"])
            if areas.get("replicas"):
                _collect_replicas(family, label, areas["replicas"])
            if source.outbox:
                _collect_outbox(family, label, source.database)
        yield from families.values()


Family = Callable[..., Any]


def _collect_pool(family: Family, label: str, stats: dict[str, float]) -> None:
    for name, key, doc in _POOL_GAUGES:
        family(name, GaugeMetricFamily, doc).add_metric([label], float(stats.get(key, 0)))
    for name, key, scale, doc in _POOL_COUNTERS:
        family(name, CounterMetricFamily, doc).add_metric([label], stats.get(key, 0) * scale)
    family("pool_max_hold_seconds", GaugeMetricFamily, "Longest a connection was held").add_metric(
        [label], stats.get("max_hold_ms", 0) * 0.001
    )


def _collect_transactions(family: Family, label: str, stats: dict[str, Any]) -> None:
    for isolation, figures in sorted(stats.get("by_isolation", {}).items()):
        for outcome in ("committed", "failed", "discarded"):
            family(
                "transactions",
                CounterMetricFamily,
                "Transaction calls by outcome",
                "isolation",
                "outcome",
            ).add_metric([label, isolation, outcome], figures[outcome])
        family(
            "transaction_rollbacks",
            CounterMetricFamily,
            "Database transactions rolled back",
            "isolation",
        ).add_metric([label, isolation], figures["rolled_back"])
        family(
            "transaction_retries", CounterMetricFamily, "Transaction runs retried", "isolation"
        ).add_metric([label, isolation], figures["retries"])
        histogram = figures.get("duration_histogram")
        if histogram is not None:
            family(
                "transaction_duration_seconds",
                HistogramMetricFamily,
                "Transaction call duration, retries and backoff included",
                "isolation",
            ).add_metric([label, isolation], _buckets(histogram["buckets"]), histogram["sum_s"])


def _buckets(buckets: list[tuple[float, int]]) -> list[tuple[str, float]]:
    return [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in buckets]


def _collect_queries(family: Family, label: str, observer: Observer) -> None:
    histogram = family(
        "query_duration_seconds", HistogramMetricFamily, "Statement execution time", "operation"
    )
    metrics = observer.metrics
    for operation, data in (metrics.snapshot() if metrics is not None else {}).items():
        histogram.add_metric([label, operation], _buckets(data["buckets"]), data["sum_s"])
    errors = family(
        "query_errors",
        CounterMetricFamily,
        "Statements that raised, by error class (never the message)",
        "operation",
        "error",
    )
    for (operation, error), count in (metrics.errors() if metrics is not None else {}).items():
        errors.add_metric([label, operation, error], count)
    slow = observer.slow_log.count if observer.slow_log is not None else 0
    family("slow_queries", CounterMetricFamily, "Statements over slow_query_ms").add_metric(
        [label], slow
    )
    family("nplusone_detections", CounterMetricFamily, "N+1 patterns reported").add_metric(
        [label], observer.nplusone.detections
    )


# name, cache stats key, help
_CACHE_COUNTERS = (
    ("cache_hits", "hits", "Cached reads served from the cache"),
    ("cache_misses", "misses", "Cached reads that went to the database"),
    ("cache_sets", "sets", "Results stored in the cache"),
    ("cache_invalidations", "invalidations", "Tables whose cached results were invalidated"),
    ("cache_bypasses", "bypasses", "Cacheable reads sent past the cache (written tables, ...)"),
    ("cache_errors", "errors", "Cache backend failures (the read went to the database)"),
)
_REPLICA_STATES = ("unknown", "healthy", "lagging", "down")


def _collect_cache(family: Family, label: str, stats: dict[str, Any]) -> None:
    for name, key, doc in _CACHE_COUNTERS:
        family(name, CounterMetricFamily, doc).add_metric([label], float(stats.get(key, 0)))
    family(
        "cache_hit_ratio", GaugeMetricFamily, "Hits over hits and misses since the last reset"
    ).add_metric([label], float(stats.get("hit_ratio", 0.0)))
    family(
        "cache_pending_invalidations",
        GaugeMetricFamily,
        "Invalidations waiting for the cache backend to come back",
    ).add_metric([label], float(stats.get("pending", 0)))


def _collect_replicas(family: Family, label: str, stats: dict[str, Any]) -> None:
    family(
        "replica_primary_reads",
        CounterMetricFamily,
        "Read-only transactions the primary served (read-your-writes, every replica ejected)",
    ).add_metric([label], float(stats.get("primary_reads", 0)))
    family(
        "replica_rerouted_reads",
        CounterMetricFamily,
        "Reads run again elsewhere after their replica failed",
    ).add_metric([label], float(stats.get("rerouted_reads", 0)))
    for name, figures in sorted(stats.get("replicas", {}).items()):
        # host:port as the router names it; anything before an "@" is never shown
        replica = str(name).rsplit("@", 1)[-1]
        state = figures.get("state", "unknown")
        family(
            "replica_up",
            GaugeMetricFamily,
            "1 if the replica is healthy: probed, and not ejected (drained or not)",
            "replica",
        ).add_metric([label, replica], 1.0 if figures.get("admitted", state == "healthy") else 0.0)
        family(
            "replica_drained",
            GaugeMetricFamily,
            "1 if the replica is weighted 0: it gets no reads, healthy or not",
            "replica",
        ).add_metric([label, replica], 1.0 if figures.get("drained") else 0.0)
        states = family(
            "replica_state",
            GaugeMetricFamily,
            "1 for the replica's current state",
            "replica",
            "state",
        )
        for known in _REPLICA_STATES:
            states.add_metric([label, replica, known], 1.0 if state == known else 0.0)
        if figures.get("lag_s") is not None:
            family(
                "replica_lag_seconds", GaugeMetricFamily, "Replay lag as last measured", "replica"
            ).add_metric([label, replica], float(figures["lag_s"]))
        family(
            "replica_reads", CounterMetricFamily, "Read-only transactions routed here", "replica"
        ).add_metric([label, replica], float(figures.get("reads", 0)))
        family(
            "replica_ejections", CounterMetricFamily, "Times the replica was ejected", "replica"
        ).add_metric([label, replica], float(figures.get("ejections", 0)))


def _collect_outbox(family: Family, label: str, database: Any) -> None:
    from dalkit.outbox.relay import read_status

    try:
        status = read_status(database)
    except (DalkitError, SQLAlchemyError) as exc:
        # a scrape must not fail for one database: the gap in the series says enough
        log.warning("outbox metrics of %s unavailable: %s", label, type(exc).__name__)
        return
    family("outbox_pending_messages", GaugeMetricFamily, "Outbox messages not yet sent").add_metric(
        [label], status.pending
    )
    family(
        "outbox_failing_messages", GaugeMetricFamily, "Pending messages that failed at least once"
    ).add_metric([label], status.failing)
    family(
        "outbox_oldest_pending_age_seconds", GaugeMetricFamily, "Age of the oldest pending message"
    ).add_metric([label], status.oldest_pending_age_s or 0.0)


def _default_name(database: Any) -> str:
    url = database.config.url
    name = url.database or url.get_backend_name()
    return PurePath(name).name if url.get_backend_name() == "sqlite" else name


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, DalkitCollector] = (
    weakref.WeakKeyDictionary()
)


def register(
    database: Any,
    name: str | None = None,
    registry: CollectorRegistry = REGISTRY,
    *,
    outbox: bool = False,
) -> DalkitCollector:
    """Add ``database`` to the registry's dalkit collector (registered on first use).

    Args:
        database: A Database or AsyncDatabase.
        name: Its ``database`` label (see ``DalkitCollector.add``).
        registry: The registry to collect into.
        outbox: Add the outbox backlog (sync Database only).

    Returns:
        The registry's collector.

    Raises:
        ConfigurationError: As for ``DalkitCollector.add``.

    Examples:
        ```python test="skip"
        from dalkit.observe.prometheus import register, start_http_server

        register(db, "orders")
        start_http_server(9108)  # /metrics on 127.0.0.1:9108
        ```
    """
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = DalkitCollector()
        registry.register(collector)
    collector.add(database, name, outbox=outbox)
    return collector


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> Any:
    """Serve ``/metrics`` from a background thread.

    Args:
        port: The port (0: any free one).
        addr: The address to listen on; loopback unless you say otherwise.
        registry: The registry served.

    Returns:
        prometheus_client's ``(server, thread)``.
    """
    return _start_http_server(port, addr=addr, registry=registry)


def make_asgi_app(registry: CollectorRegistry = REGISTRY) -> Any:
    """An ASGI app serving the metrics, to mount at ``/metrics`` (Starlette, FastAPI).

    Args:
        registry: The registry served.

    Returns:
        The ASGI application.
    """
    return _make_asgi_app(registry=registry)
