"""Pool statistics in psycopg_pool's vocabulary, pool upkeep (min_size, max_queries, max_idle_s),
the leak warning for connections held too long and the periodic status log.

SQLAlchemy's pool events say when a connection is opened, checked out, checked in or
invalidated, but nothing about waiting: waits and timeouts are measured by the pool subclasses
below, around ``Pool.connect()``. The listeners are synchronous and serve the async engine too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import traceback
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, QueuePool
from sqlalchemy.pool.base import PoolProxiedConnection

from dalkit import driver_errors, errors
from dalkit.engine.ticker import Ticker

if TYPE_CHECKING:
    from dalkit.config import DatabaseConfig

__all__ = ["PoolMetrics", "PoolUpkeep", "instrumented_pool_class", "install"]

log = logging.getLogger("dalkit.pool")

_COUNTERS = (
    "requests_num",
    "requests_wait_ms",
    "requests_timeouts",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
    "connections_recycled",
    "connections_idle_closed",
    "usage_ms",
    "max_hold_ms",
)
# keys of ConnectionRecord.info, which SQLAlchemy clears whenever the connection is replaced
_CHECKOUT_AT = "dalkit_checkout_at"
_CONNECT_STARTED = "dalkit_connect_started"
_FILL_S = "dalkit_fill_s"
_QUERIES = "dalkit_queries"
_IDLE_SINCE = "dalkit_idle_since"
_REPLACING = "dalkit_replacing"
_SQLALCHEMY_DIR = os.path.dirname(sqlalchemy.__file__)


@dataclasses.dataclass(frozen=True)
class PoolUpkeep:
    """The pool options SQLAlchemy lacks: see DatabaseConfig for what each one means."""

    min_size: int = 0
    max_queries: int | None = None
    max_idle_s: float | None = None

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> PoolUpkeep:
        return cls(config.min_size, config.max_queries, config.max_idle_s)


class PoolMetrics:
    """Counters (reset by `snapshot(reset=True)`) and held connections, for leak warnings."""

    def __init__(self, leak_threshold_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(_COUNTERS, 0.0)
        self.requests_waiting = 0
        self.leak_threshold_s = leak_threshold_s
        # record id -> (checked out at, checkout stack, already warned)
        self._held: dict[int, tuple[float, list[traceback.FrameSummary], bool]] = {}
        self._watcher: Ticker | None = None
        self.upkeep = PoolUpkeep()
        self.status_interval_s: float | None = None
        self._status_log: Ticker | None = None
        self._pool_ref: Callable[[], Pool | None] = lambda: None

    # -- measured around Pool.connect() ---------------------------------------------------
    def request_failed(self, waited_s: float, *, timed_out: bool) -> None:
        with self._lock:
            self.requests_waiting -= 1
            self._counters["requests_num"] += 1
            self._counters["requests_wait_ms"] += waited_s * 1000.0
            if timed_out:
                self._counters["requests_timeouts"] += 1

    def request_granted(self, record_info: dict[Any, Any], started: float, now: float) -> None:
        """Count a served request and start its hold timer: once per checkout, one lock."""
        record_info[_CHECKOUT_AT] = now
        # opening a connection is not waiting for one: that time goes to connections_ms
        connecting = 0.0
        if _CONNECT_STARTED in record_info or _FILL_S in record_info:  # rare: skip 2 calls
            connecting = self.connected(record_info, now) + record_info.pop(_FILL_S, 0.0)
        with self._lock:
            self.requests_waiting -= 1
            self._counters["requests_num"] += 1
            self._counters["requests_wait_ms"] += max(0.0, now - started - connecting) * 1000.0
        if self.leak_threshold_s is not None:
            self._remember_checkout(id(record_info), now)
        if self.status_interval_s is not None and self._status_log is None:
            self._start_status_log()

    def connected(self, record_info: dict[Any, Any], now: float) -> float:
        """Seconds spent opening the connection of ``record_info`` if it is new (the driver's
        connect, the pragmas and the init hook), counted in connections_ms; else 0."""
        started = record_info.pop(_CONNECT_STARTED, None)
        if started is None:
            return 0.0
        with self._lock:
            self._counters["connections_ms"] += (now - started) * 1000.0
        return float(now - started)

    # -- pool event listeners -------------------------------------------------------------
    def on_do_connect(self, dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        if record is not None:
            record.info[_CONNECT_STARTED] = perf_counter()

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self._counters["connections_num"] += 1

    def on_cursor_execute(self, conn: Any, *args: Any) -> None:
        info = conn.connection.info
        info[_QUERIES] = info.get(_QUERIES, 0) + 1

    def _remember_checkout(self, key: int, now: float) -> None:
        stack = _caller_frames(_checkout_stack())
        with self._lock:
            self._held[key] = (now, stack, False)
        self._ensure_watcher()

    def on_checkin(self, record: Any) -> None:
        started = record.info.pop(_CHECKOUT_AT, None)
        if started is None:
            return
        now = perf_counter()
        record.info[_IDLE_SINCE] = now
        held_ms = (now - started) * 1000.0
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

    def replace_if_spent(self, record: Any) -> None:
        """Mark a record taken from the pool for replacement when it ran ``max_queries``
        statements or sat idle ``max_idle_s``: SQLAlchemy then closes and reopens it before
        handing it out, as it does for ``pool_recycle``."""
        info = record.info
        if record.dbapi_connection is None or info.get(_REPLACING):
            return
        upkeep = self.upkeep
        reason = None
        if upkeep.max_queries is not None and info.get(_QUERIES, 0) >= upkeep.max_queries:
            reason = "connections_recycled"
        elif upkeep.max_idle_s is not None and (
            perf_counter() - info.get(_IDLE_SINCE, perf_counter()) > upkeep.max_idle_s
        ):
            reason = "connections_idle_closed"
        if reason is None:
            return
        info[_REPLACING] = True
        record.invalidate(soft=True)
        with self._lock:
            self._counters[reason] += 1

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
            "pool_min": self.upkeep.min_size,
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

    # -- the status log -------------------------------------------------------------------
    def _start_status_log(self) -> None:
        assert self.status_interval_s is not None
        with self._lock:
            if self._status_log is None:
                self._status_log = Ticker(
                    "dalkit-pool-status", self.status_interval_s, self.log_status
                )
                self._status_log.start()

    def log_status(self) -> None:
        """Log the pool statistics (not resetting them) at INFO on ``dalkit.pool``."""
        pool = self._pool_ref()
        if pool is not None:
            stats = self.snapshot(pool)
            log.info("pool status: %s", " ".join(f"{k}={v}" for k, v in stats.items()))

    # -- leak detection -------------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            with self._lock:
                if self._watcher is None:
                    assert self.leak_threshold_s is not None
                    interval = min(max(self.leak_threshold_s / 4, 0.05), 5.0)
                    # a leaked connection never checks in, so nothing else would notice it
                    self._watcher = Ticker("dalkit-leak-watcher", interval, self.warn_about_leaks)
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
        for ticker in (self._watcher, self._status_log):
            if ticker is not None:
                ticker.stop()
        self._watcher = self._status_log = None


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


class _InstrumentedPoolMixin:
    """Times every checkout request, keeps the pool up (min_size, max_queries, max_idle_s) and
    turns SQLAlchemy's pool timeout into PoolTimeoutError and a refused connection (asyncpg
    raises plain OSError) into ConnectionFailedError."""

    dalkit_metrics: PoolMetrics
    _dalkit_filling = False

    def connect(self) -> PoolProxiedConnection:
        metrics = self.dalkit_metrics
        with metrics._lock:  # inline: a method call per checkout shows in bench_pool
            metrics.requests_waiting += 1
        started = perf_counter()
        try:
            connection: PoolProxiedConnection = super().connect()  # type: ignore[misc]
        except sa_exc.TimeoutError as exc:
            waited = perf_counter() - started
            metrics.request_failed(waited, timed_out=True)
            pool = cast(QueuePool, self)
            raise errors.PoolTimeoutError(pool.size(), pool._max_overflow, waited * 1000.0) from exc
        except OSError as exc:
            metrics.request_failed(perf_counter() - started, timed_out=False)
            metrics.on_connect_error()
            raise driver_errors.translate_connect_error(exc) from exc
        except BaseException:
            metrics.request_failed(perf_counter() - started, timed_out=False)
            raise
        if metrics.upkeep.min_size:
            self._fill_to_min_size(connection, metrics.upkeep.min_size)
        metrics.request_granted(connection.info, started, perf_counter())
        return connection

    def _do_return_conn(self, record: Any) -> None:
        # not a checkin listener: any pool listener costs ~3 us a checkout (bench_pool, SQLite)
        self.dalkit_metrics.on_checkin(record)
        super()._do_return_conn(record)  # type: ignore[misc]

    def _do_get(self) -> Any:
        record = super()._do_get()  # type: ignore[misc]
        upkeep = self.dalkit_metrics.upkeep
        if upkeep.max_queries is not None or upkeep.max_idle_s is not None:
            self.dalkit_metrics.replace_if_spent(record)
        return record

    def _fill_to_min_size(self, connection: PoolProxiedConnection, min_size: int) -> None:
        """Open connections up to ``min_size`` inside a checkout, where the async pool can
        reach its driver: the first checkout pre-warms the pool, later ones refill it."""
        pool = cast(QueuePool, self)
        missing = min(min_size, pool.size()) - (pool.size() + pool.overflow())
        if missing <= 0 or self._dalkit_filling:
            return
        self._dalkit_filling = True
        started = perf_counter()
        try:
            checkout = super().connect  # type: ignore[misc]
            extra = [checkout() for _ in range(missing)]
            for spare in extra:
                self.dalkit_metrics.connected(spare.info, perf_counter())
                spare.close()
        finally:
            self._dalkit_filling = False
        # the requester waited for these too, but opening is not queueing
        connection.info[_FILL_S] = perf_counter() - started

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


def install(engine: Engine, metrics: PoolMetrics, config: DatabaseConfig | None = None) -> None:
    """Attach ``metrics`` to ``engine`` (the sync engine under an AsyncEngine), with the pool
    upkeep and status log that ``config`` asks for."""
    engine.pool.dalkit_metrics = metrics  # type: ignore[attr-defined]
    metrics._pool_ref = _current_pool(engine)
    if config is not None:
        metrics.upkeep = PoolUpkeep.from_config(config)
        metrics.status_interval_s = config.pool_log_interval_s
    if metrics.upkeep.max_queries is not None:
        # counted per connection only when asked for: it runs for every statement
        event.listen(engine, "before_cursor_execute", metrics.on_cursor_execute)
    event.listen(engine, "do_connect", metrics.on_do_connect)
    event.listen(engine.pool, "connect", metrics.on_connect)
    event.listen(engine.pool, "invalidate", metrics.on_invalidate)


def _current_pool(engine: Engine) -> Callable[[], Pool | None]:
    # dispose() swaps engine.pool; a weak reference lets an unused database be collected
    ref = weakref.ref(engine)

    def current() -> Pool | None:
        found = ref()
        return found.pool if found is not None else None

    return current
