"""A database nobody holds any more releases what it opened, as a plain SQLAlchemy engine that is
garbage-collected does: its pool's idle connections are closed, its tickers (leak warnings, the
pool status log) and its replica monitor stop.

``release_when_dropped()`` registers a ``weakref.finalize`` on the Database; what the finalizer
holds (the engine, the pool metrics, the replica router) never refers back to the Database, or
it would never be collected. A sync engine is disposed where the collection happens. An async
pool's connections belong to the event loop that opened them: they are closed on that loop when
it still runs; when it is closed, nothing can be awaited any more, so a psycopg connection is
closed without I/O on the loop, and the loop closed the idle ones of the others as it shut
down (engine/loops.py); what was left is left to the driver's own collection, as SQLAlchemy
leaves a collected async connection. A finalizer never raises: what fails is logged
at DEBUG on ``dalkit.pool``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from typing import Any

from sqlalchemy import event

__all__ = ["release_when_dropped"]

log = logging.getLogger("dalkit.pool")

# the disposals scheduled on a loop: a task nobody holds may be collected before it ends
_disposing: set[asyncio.Task[None]] = set()


class _LoopSeen:
    """The event loop an async pool's connections were opened on (the last one seen), and the
    driver connections opened, while they live."""

    __slots__ = ("loop", "opened")

    def __init__(self) -> None:
        self.loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()

    def on_connect(self, _dbapi_connection: Any, record: Any) -> None:
        with contextlib.suppress(TypeError):  # a driver connection that takes no weakref
            self.opened.add(record.driver_connection)
        try:
            self.loop = weakref.ref(asyncio.get_running_loop())
        except RuntimeError:  # opened outside a loop: nothing to schedule on
            self.loop = None


def release_when_dropped(database: object, engine: Any, metrics: Any, router: Any) -> None:
    """Release ``engine``'s pool, ``metrics``' tickers and ``router``'s monitor once
    ``database`` is garbage-collected (never at interpreter exit: the process closes all).

    Args:
        database: The Database or AsyncDatabase.
        engine: Its Engine or AsyncEngine.
        metrics: Its pool metrics (``close()`` stops their tickers).
        router: Its replica router, or None.
    """
    if hasattr(engine, "sync_engine"):
        seen = _LoopSeen()
        event.listen(engine.sync_engine.pool, "connect", seen.on_connect)
        weakref.finalize(database, _release_async, engine, metrics, router, seen).atexit = False
    else:
        weakref.finalize(database, _release, engine, metrics, router).atexit = False


def _release(engine: Any, metrics: Any, router: Any) -> None:
    try:
        metrics.close()
        if router is not None:
            router.release()
        engine.dispose()
    except Exception:  # a finalizer must not raise: the process goes on
        log.debug("could not close the pool of a collected database", exc_info=True)


def _release_async(engine: Any, metrics: Any, router: Any, seen: _LoopSeen) -> None:
    try:
        metrics.close()
    except Exception:
        log.debug("could not stop the tickers of a collected database", exc_info=True)
    loop = seen.loop() if seen.loop is not None else None
    if loop is not None and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(_dispose_soon, engine, router)
            return
        except RuntimeError:  # closed in the meantime
            pass
    _close_without_loop(seen)


def _dispose_soon(engine: Any, router: Any) -> None:
    # a context of its own: not the one of whatever code the collection interrupted
    task = asyncio.get_running_loop().create_task(
        _dispose(engine, router), context=contextvars.Context()
    )
    _disposing.add(task)
    task.add_done_callback(_disposing.discard)


async def _dispose(engine: Any, router: Any) -> None:
    try:
        if router is not None:
            await router.close()
        await engine.dispose()
    except Exception:
        log.debug("could not close the pool of a collected database", exc_info=True)


def _close_without_loop(seen: _LoopSeen) -> None:
    """Close what can be closed once the loop is: psycopg's connections (no I/O on the loop)
    and aiosqlite's (its own thread closes them); asyncpg's need the loop, left to the driver."""
    for driver in list(seen.opened):
        try:
            pgconn = getattr(driver, "pgconn", None)
            if pgconn is not None:
                pgconn.finish()
            elif type(driver).__module__.startswith("aiosqlite") and driver._connection:
                driver.stop()  # not closed yet: its own thread closes the file, no loop needed
        except Exception:
            log.debug("could not close a connection of a collected database", exc_info=True)
