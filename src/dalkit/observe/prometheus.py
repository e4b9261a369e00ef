"""A ``prometheus_client`` collector for one or more databases (a ``database`` label): pool
gauges and counters, transactions, query histograms per operation, slow queries and N+1
detections. Labels hold names chosen here or by you, never URLs or credentials.

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
from sqlalchemy.exc import SQLAlchemyError

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
    """Collects from every database added with :meth:`add`, labelled by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}

    def add(self, database: Any, name: str | None = None, *, outbox: bool = False) -> str:
        """Collect from ``database`` (a Database or AsyncDatabase) under ``name`` (default: the
        database name of its URL); returns the name. ``outbox`` adds the transactional outbox's
        backlog, read with one query per scrape (sync Database only)."""
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
        with self._lock:
            self._sources.pop(name, None)

    def describe(self) -> list[Metric]:
        # the families depend on the databases added later: nothing to check at registration
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = sorted(self._sources.items())
        families: dict[str, Metric] = {}

        def family(name: str, kind: Callable[..., Metric], doc: str, *labels: str) -> Any:
            if name not in families:
                families[name] = kind(f"dalkit_{name}", doc, labels=["database", *labels])
            return families[name]

        for label, source in sources:
            _collect_pool(family, label, source.database.pool_stats())
            _collect_transactions(family, label, source.database.transaction_stats())
            _collect_queries(family, label, source.observer)
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
        for outcome in ("committed", "failed"):
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
        durations = family(
            "transaction_duration_seconds",
            GaugeMetricFamily,
            "Transaction call duration percentiles over the recent window",
            "isolation",
            "quantile",
        )
        for name, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            seconds = figures["duration_ms"][name] / 1000.0
            durations.add_metric([label, isolation, quantile], seconds)


def _collect_queries(family: Family, label: str, observer: Observer) -> None:
    histogram = family(
        "query_duration_seconds", HistogramMetricFamily, "Statement execution time", "operation"
    )
    metrics = observer.metrics
    for operation, data in (metrics.snapshot() if metrics is not None else {}).items():
        buckets = [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in data["buckets"]]
        histogram.add_metric([label, operation], buckets, data["sum_s"])
    slow = observer.slow_log.count if observer.slow_log is not None else 0
    family("slow_queries", CounterMetricFamily, "Statements over slow_query_ms").add_metric(
        [label], slow
    )
    family("nplusone_detections", CounterMetricFamily, "N+1 patterns reported").add_metric(
        [label], observer.nplusone.detections
    )


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
    """Add ``database`` to the registry's dalkit collector (registered on first use)."""
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = DalkitCollector()
        registry.register(collector)
    collector.add(database, name, outbox=outbox)
    return collector


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> Any:
    """Serve ``/metrics`` from a background thread; returns prometheus_client's (server,
    thread). Listens on loopback unless ``addr`` says otherwise."""
    return _start_http_server(port, addr=addr, registry=registry)


def make_asgi_app(registry: CollectorRegistry = REGISTRY) -> Any:
    """An ASGI app serving the metrics, to mount at ``/metrics`` (Starlette, FastAPI)."""
    return _make_asgi_app(registry=registry)
