"""Pool statistics in psycopg_pool's vocabulary, and the leak warning for connections held too long.

SQLAlchemy's pool events say when a connection is opened, checked out, checked in or
invalidated, but nothing about waiting: waits and timeouts are measured by the pool subclasses
below, around ``Pool.connect()``. The listeners are synchronous and serve the async engine too.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from time import perf_counter
from typing import Any, cast

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, QueuePool
from sqlalchemy.pool.base import PoolProxiedConnection

from dalkit.errors import PoolTimeoutError

__all__ = ["PoolMetrics", "instrumented_pool_class", "install"]

log = logging.getLogger("dalkit.pool")

_COUNTERS = (
    "requests_num",
    "requests_wait_ms",
    "requests_timeouts",
    "connections_num",
    "connections_errors",
    "connections_lost",
    "usage_ms",
    "max_hold_ms",
)
_CHECKOUT_AT = "dalkit_checkout_at"
_SQLALCHEMY_DIR = os.path.dirname(sqlalchemy.__file__)


class PoolMetrics:
    """Counters (reset by :meth:`pop`) and the registry of held connections for leak warnings."""

    def __init__(self, leak_threshold_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(_COUNTERS, 0.0)
        self.requests_waiting = 0
        self.leak_threshold_s = leak_threshold_s
        # record id -> (checked out at, checkout stack, already warned)
        self._held: dict[int, tuple[float, list[traceback.FrameSummary], bool]] = {}
        self._watcher: _LeakWatcher | None = None

    # -- measured around Pool.connect() ---------------------------------------------------
    def request_started(self) -> None:
        with self._lock:
            self.requests_waiting += 1

    def request_failed(self, waited_s: float, *, timed_out: bool) -> None:
        with self._lock:
            self.requests_waiting -= 1
            self._counters["requests_num"] += 1
            self._counters["requests_wait_ms"] += waited_s * 1000.0
            if timed_out:
                self._counters["requests_timeouts"] += 1

    def request_granted(self, record_info: dict[Any, Any], started: float, now: float) -> None:
        """Count a served request and start its hold timer, in one locked step: this runs on
        every checkout, so it takes the lock once and needs no checkout event."""
        record_info[_CHECKOUT_AT] = now
        with self._lock:
            self.requests_waiting -= 1
            self._counters["requests_num"] += 1
            self._counters["requests_wait_ms"] += (now - started) * 1000.0
        if self.leak_threshold_s is not None:
            self._remember_checkout(id(record_info), now)

    # -- pool event listeners -------------------------------------------------------------
    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self._counters["connections_num"] += 1

    def _remember_checkout(self, key: int, now: float) -> None:
        stack = _caller_frames(_checkout_stack())
        with self._lock:
            self._held[key] = (now, stack, False)
        self._ensure_watcher()

    def on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        started = record.info.pop(_CHECKOUT_AT, None)
        if started is None:
            return
        held_ms = (perf_counter() - started) * 1000.0
        with self._lock:
            self._counters["usage_ms"] += held_ms
            if held_ms > self._counters["max_hold_ms"]:
                self._counters["max_hold_ms"] = held_ms
            if self._held:
                self._held.pop(id(record.info), None)

    def on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        with self._lock:
            self._counters["connections_lost"] += 1

    def on_connect_error(self) -> None:
        with self._lock:
            self._counters["connections_errors"] += 1

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self, pool: Pool, *, reset: bool = False) -> dict[str, int | float]:
        """The counters plus the pool's gauges; ``reset`` zeroes the counters atomically."""
        with self._lock:
            counters = dict(self._counters)
            waiting = self.requests_waiting
            if reset:
                self._counters = dict.fromkeys(_COUNTERS, 0.0)
        stats: dict[str, int | float] = {
            "pool_size": 0,
            "pool_available": 0,
            "checked_out": 0,
            "overflow": 0,
            "requests_waiting": waiting,
        }
        if isinstance(pool, QueuePool):
            stats.update(
                pool_size=pool.size(),
                pool_available=pool.checkedin(),
                checked_out=pool.checkedout(),
                overflow=max(0, pool.overflow()),
            )
        for name, value in counters.items():
            stats[name] = round(value, 3) if name.endswith("_ms") else int(value)
        return stats

    # -- leak detection -------------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            with self._lock:
                if self._watcher is None:
                    self._watcher = _LeakWatcher(self)
                    self._watcher.start()

    def warn_about_leaks(self) -> None:
        """Log once per checkout for each connection held past the threshold."""
        assert self.leak_threshold_s is not None
        now = perf_counter()
        overdue = []
        with self._lock:
            for key, (started, stack, warned) in self._held.items():
                if not warned and now - started > self.leak_threshold_s:
                    self._held[key] = (started, stack, True)
                    overdue.append((now - started, stack))
        for held_s, stack in overdue:
            log.warning(
                "connection held for %.1f s (leak_threshold_s=%s); checked out at:\n%s",
                held_s,
                self.leak_threshold_s,
                "".join(traceback.format_list(stack)),
            )

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None


def _checkout_stack() -> list[traceback.FrameSummary]:
    """The stack of the code checking out, across SQLAlchemy's async bridge.

    Under asyncio the checkout runs in a greenlet whose stack ends at the bridge; the awaiting
    coroutines are in the suspended parent greenlet, so their frames are prepended.
    """
    stack = traceback.extract_stack()
    try:
        import greenlet  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # sync-only installs have no greenlet, and need none
        return stack
    parent = greenlet.getcurrent().parent
    frame = parent.gr_frame if parent is not None else None
    return traceback.extract_stack(frame) + stack if frame is not None else stack


def _caller_frames(stack: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The application's frames: SQLAlchemy's and this module's own say nothing about a leak."""
    return [
        frame
        for frame in stack
        if _SQLALCHEMY_DIR not in frame.filename and frame.filename != __file__
    ] or stack


class _LeakWatcher(threading.Thread):
    """One daemon thread per database: a leaked connection never checks in, so nothing else
    would notice it."""

    def __init__(self, metrics: PoolMetrics) -> None:
        super().__init__(name="dalkit-leak-watcher", daemon=True)
        self._metrics = metrics
        self._stopped = threading.Event()
        assert metrics.leak_threshold_s is not None
        self._interval = min(max(metrics.leak_threshold_s / 4, 0.05), 5.0)

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._metrics.warn_about_leaks()

    def stop(self) -> None:
        self._stopped.set()


class _InstrumentedPoolMixin:
    """Times every checkout request and turns SQLAlchemy's pool timeout into PoolTimeoutError."""

    dalkit_metrics: PoolMetrics

    def connect(self) -> PoolProxiedConnection:
        metrics = self.dalkit_metrics
        metrics.request_started()
        started = perf_counter()
        try:
            connection: PoolProxiedConnection = super().connect()  # type: ignore[misc]
        except sa_exc.TimeoutError as exc:
            waited = perf_counter() - started
            metrics.request_failed(waited, timed_out=True)
            pool = cast(QueuePool, self)
            raise PoolTimeoutError(pool.size(), pool._max_overflow, waited * 1000.0) from exc
        except BaseException:
            metrics.request_failed(perf_counter() - started, timed_out=False)
            raise
        metrics.request_granted(connection.info, started, perf_counter())
        return connection

    def recreate(self) -> Any:
        # dispose() builds a fresh pool of the same class: carry the counters over
        pool = super().recreate()  # type: ignore[misc]
        pool.dalkit_metrics = self.dalkit_metrics
        return pool


class InstrumentedQueuePool(_InstrumentedPoolMixin, QueuePool):
    """QueuePool with dalkit's request timing."""


class InstrumentedAsyncAdaptedQueuePool(_InstrumentedPoolMixin, AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool with dalkit's request timing."""


def instrumented_pool_class(*, is_async: bool) -> type[Pool]:
    return InstrumentedAsyncAdaptedQueuePool if is_async else InstrumentedQueuePool


def install(engine: Engine, metrics: PoolMetrics) -> None:
    """Attach ``metrics`` to ``engine`` (the sync engine under an AsyncEngine)."""
    engine.pool.dalkit_metrics = metrics  # type: ignore[attr-defined]
    event.listen(engine.pool, "connect", metrics.on_connect)
    event.listen(engine.pool, "checkin", metrics.on_checkin)
    event.listen(engine.pool, "invalidate", metrics.on_invalidate)
