"""Pool classes that time every checkout request and keep the pool up (min_size, max_queries,
max_idle_s), and `install()`, which attaches a `PoolMetrics`.

SQLAlchemy's pool events say when a connection is opened, checked out, checked in or
invalidated, but nothing about waiting: waits and timeouts are measured by the pool subclasses
below, around ``Pool.connect()``. The listeners are synchronous and serve the async engine too.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, QueuePool
from sqlalchemy.pool.base import PoolProxiedConnection

from dalkit import driver_errors, driver_messages, errors
from dalkit.config import is_memory_sqlite
from dalkit.engine import loops
from dalkit.engine.loops import running_loop
from dalkit.engine.pool_metrics import (
    CHECKOUT_AT,
    CONNECT_STARTED,
    FILL_S,
    FOLD_AT,
    IDLE_SINCE,
    PoolMetrics,
    PoolUpkeep,
)
from dalkit.engine.statement_hooks import hooks_for, serves_lean

if TYPE_CHECKING:
    from dalkit.config import DatabaseConfig

__all__ = ["PoolMetrics", "PoolUpkeep", "instrumented_pool_class", "install"]

log = logging.getLogger("dalkit.pool")


class _InstrumentedPoolMixin:
    """Times every checkout request, keeps the pool up (min_size, max_queries, max_idle_s) and
    turns SQLAlchemy's pool timeout into PoolTimeoutError and a refused connection (asyncpg
    raises plain OSError) into ConnectionFailedError."""

    dalkit_metrics: PoolMetrics
    _dalkit_filling = False
    # the next class's methods, looked up once per class: on CPython 3.11 a super() call costs
    # ~0.14 us more than this (timeit), paid per checkout and per checkin
    _dalkit_checkout: Any
    _dalkit_return: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        after = super()
        cls._dalkit_checkout = after.connect  # type: ignore[attr-defined]
        cls._dalkit_return = after._do_return_conn  # type: ignore[attr-defined]

    def connect(self) -> PoolProxiedConnection:
        metrics = self.dalkit_metrics
        waiting = metrics._waiting
        waiting.append(None)  # a deque: atomic under the GIL, no lock (see PoolMetrics)
        started = perf_counter()
        try:
            connection: PoolProxiedConnection = self._dalkit_checkout()
        except sa_exc.TimeoutError as exc:
            waited = perf_counter() - started
            metrics.request_failed(waited, timed_out=True)
            pool = cast(QueuePool, self)
            raise errors.PoolTimeoutError(pool.size(), pool._max_overflow, waited * 1000.0) from exc
        except OSError as exc:
            metrics.request_failed(perf_counter() - started, timed_out=False)
            metrics.on_connect_error()
            translated = driver_errors.translate_connect_error(exc)
            raise translated from driver_messages.mask_chain(exc)
        except BaseException:
            metrics.request_failed(perf_counter() - started, timed_out=False)
            raise
        # the record's info, not the fairy's: PoolProxiedConnection.info costs two Python calls
        # per checkout (cProfile), memoized on an object used once
        info = connection._connection_record.info
        if metrics.slow_checkout or CONNECT_STARTED in info:
            if metrics.upkeep.min_size:
                self._fill_to_min_size(connection, metrics.upkeep.min_size)
            metrics.request_granted(info, started, perf_counter())
            return connection
        # PoolMetrics.request_granted() inlined for a pooled connection, the common case: no
        # lock and no call. With the other cuts here, the instrumentation's CPU time per SQLite
        # engine.connect() + SELECT 1 fell from +3.7-3.9 us (+13-16%) to +1.1-1.3 us (+4-5%)
        now = info[CHECKOUT_AT] = perf_counter()
        metrics._grants.append(now - started)
        waiting.pop()
        return connection

    _dalkit_connect = connect  # the async pool's checkout calls it once its loop is checked

    def _do_return_conn(self, record: Any) -> None:
        # not a checkin listener: any pool listener costs ~3 us a checkout (bench_pool, SQLite)
        info = record.info
        started = info.pop(CHECKOUT_AT, None)
        if started is not None:
            metrics = self.dalkit_metrics
            now = info[IDLE_SINCE] = perf_counter()
            holds = metrics._holds
            holds.append(now - started)
            # _held is only ever non-empty with leak tracking on; a dict's truth needs no lock
            if len(holds) > FOLD_AT or metrics._held:
                metrics.checked_in(info)
        self._dalkit_return(record)

    def _should_wrap_creator(self, creator: Any) -> Any:
        # called for each pool's creator: starts the connections_ms clock of every new
        # connection. Not a do_connect listener: any dialect listener costs every statement an
        # event-list iteration (SQLite checkout + SELECT 1: +0.26 us, +1.1% CPU time)
        invoke = super()._should_wrap_creator(creator)  # type: ignore[misc]

        def timed_creator(record: Any) -> Any:
            if record is not None:
                record.info[CONNECT_STARTED] = perf_counter()
            return invoke(record)

        return timed_creator

    def _dalkit_attach(self, metrics: PoolMetrics) -> None:
        self.dalkit_metrics = metrics
        upkeep = metrics.upkeep
        if upkeep.max_queries is not None or upkeep.max_idle_s is not None:
            # shadows the class's _do_get on this pool only: pools without this upkeep (the
            # default) pay no extra call per checkout
            self.__dict__["_do_get"] = self._dalkit_get_unspent

    def _dalkit_get_unspent(self) -> Any:
        record = type(self)._do_get(self)  # type: ignore[attr-defined]
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
        checkout = super().connect  # type: ignore[misc]
        spares = []
        try:
            for _ in range(missing):  # held until all are open: a returned one would be reused
                spares.append(checkout())
                self.dalkit_metrics.connected(spares[-1].info, perf_counter())
        except Exception:
            # a pre-warm that fails must not fail the request it rides on, nor leak what opened
            log.warning("could not open connections up to min_size", exc_info=True)
        finally:
            for spare in spares:
                spare.close()
            self._dalkit_filling = False
        # the requester waited for these too, but opening is not queueing
        connection.info[FILL_S] = perf_counter() - started

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        # SQLAlchemy puts a connection checked out now back into this pool when it is given
        # back, though the engine has a fresh pool: it would stay open, idle on the server,
        # until collected (psycopg warns then). It is closed as it comes back instead
        self.__dict__["_dalkit_return"] = _close_record

    def recreate(self) -> Any:
        # dispose() builds a fresh pool of the same class: carry the counters over
        pool = super().recreate()  # type: ignore[misc]
        pool._dalkit_attach(self.dalkit_metrics)
        pool.__dict__.update(
            {key: value for key, value in self.__dict__.items() if key in _CARRIED_OVER}
        )
        return pool


def _close_record(record: Any) -> None:
    record.close()


# what a recreated async pool keeps of the one it replaces (not its loop: it has none yet)
_CARRIED_OVER = frozenset({"_dalkit_engine", "_dalkit_keeps_connections"})


class InstrumentedQueuePool(_InstrumentedPoolMixin, QueuePool):
    """QueuePool with dalkit's request timing."""


class InstrumentedAsyncAdaptedQueuePool(_InstrumentedPoolMixin, AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool with dalkit's request timing, serving one event loop at a time
    (see engine/loops.py)."""

    #: the event loop this pool's connections belong to: the one of its first checkout
    _dalkit_loop: asyncio.AbstractEventLoop | None = None
    #: closes the idle connections as that loop shuts down (loops._LoopEnd)
    _dalkit_closer: Any = None
    #: the engine (weakly): a checkout on another loop gives it a fresh pool
    _dalkit_engine: Callable[[], Engine | None] = staticmethod(lambda: None)
    #: an in-memory SQLite database lives in the pool's one connection: never closed for a loop
    _dalkit_keeps_connections = False

    def connect(self) -> PoolProxiedConnection:
        # on every checkout: the running loop against this pool's, by identity, nothing sent
        # to the server. timeit: 0.5 us on the shared dev machine, nearly all of it the getpid()
        # syscall with which CPython's _get_running_loop() ignores a forked parent's loop,
        # against 1.5 ms for an aiosqlite checkout + SELECT 1 there
        if running_loop() is self._dalkit_loop:
            return self._dalkit_connect()
        pool: InstrumentedAsyncAdaptedQueuePool = loops.pool_for_running_loop(self)
        return pool._dalkit_connect()

    def dispose(self) -> None:
        # idle connections of a loop that has stopped or closed are let go of, never closed
        # through that loop; a loop running in another thread raises EventLoopError
        if loops.settle_before_dispose(self):
            super().dispose()


def instrumented_pool_class(*, is_async: bool) -> type[Pool]:
    return InstrumentedAsyncAdaptedQueuePool if is_async else InstrumentedQueuePool


def install(engine: Engine, metrics: PoolMetrics, config: DatabaseConfig | None = None) -> None:
    """Attach ``metrics`` to ``engine`` (the sync engine under an AsyncEngine), with the pool
    upkeep and status log that ``config`` asks for."""
    metrics._pool_ref = _current_pool(engine)
    if config is not None:
        metrics.upkeep = PoolUpkeep.from_config(config)
        metrics.status_interval_s = config.pool_log_interval_s
    cast(_InstrumentedPoolMixin, engine.pool)._dalkit_attach(metrics)
    if isinstance(engine.pool, InstrumentedAsyncAdaptedQueuePool):
        engine.pool._dalkit_engine = weakref.ref(engine)
        engine.pool._dalkit_keeps_connections = is_memory_sqlite(engine.url)
    if metrics.upkeep.max_queries is not None:
        # counted per connection only when asked for: it runs for every statement; a dialect
        # hook, as an engine listener would make every connection dispatch SQLAlchemy's events
        hooks_for(engine.dialect).add_before(serves_lean(metrics.count_statement))  # lean-served
    event.listen(engine.pool, "connect", metrics.on_connect)
    event.listen(engine.pool, "invalidate", metrics.on_invalidate)


def _current_pool(engine: Engine) -> Callable[[], Pool | None]:
    # dispose() swaps engine.pool; a weak reference lets an unused database be collected
    ref = weakref.ref(engine)

    def current() -> Pool | None:
        found = ref()
        return found.pool if found is not None else None

    return current
