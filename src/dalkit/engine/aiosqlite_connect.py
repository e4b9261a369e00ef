"""How an AsyncDatabase on SQLite opens an aiosqlite connection: as SQLAlchemy's dialect does,
and, when the file cannot be opened, waiting for aiosqlite's worker thread to end before the
error is raised; and how a statement of a cancelled task stops.

aiosqlite stops its thread after a failed connect by queuing a request whose future nobody
awaits; the thread answers it through the event loop. When the loop had closed by then (the
error ended ``asyncio.run()``), the thread died printing ``RuntimeError: Event loop is
closed``, twice, in the application's output.

A statement runs in aiosqlite's thread, which a cancelled task does not stop: SQLAlchemy
invalidates the connection, whose close waited in that thread's queue until the statement had
run to its end, so ``asyncio.timeout(0.3)`` around a 10 s query returned after 10 s; and the
closed connection kept its transaction, and a write transaction's lock, until the next gc.
"""

from __future__ import annotations

from threading import Thread
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["connect_aiosqlite", "interrupt_when_cancelled"]

#: how long a failed connect waits for the worker thread, which has only to stop (a connect
#: cancelled while sqlite3 still opens the file waits for that too: the loop is held that long)
_STOP_WAIT_S = 1.0


async def connect_aiosqlite(*args: Any, **kwargs: Any) -> Any:
    """``aiosqlite.connect(*args, **kwargs)``, awaited: SQLAlchemy's ``async_creator_fn``.

    Args:
        *args: aiosqlite's connect arguments (the database path).
        **kwargs: Its keyword arguments (``timeout``, ``check_same_thread``...).

    Returns:
        The open aiosqlite connection.
    """
    import aiosqlite  # only AsyncDatabase on SQLite gets here, which needs it installed

    connection = aiosqlite.connect(*args, **kwargs)
    # before 0.22 the connection was the thread
    thread = connection if isinstance(connection, Thread) else connection._thread
    thread.daemon = True  # as SQLAlchemy's dialect makes it: never holds up the exit
    try:
        return await connection
    except BaseException:
        # its stop request is queued, and all the thread has left to do: answered while this
        # loop still runs, it ends cleanly. Joined here, not awaited: the answer is a callback
        # handed to the loop (call_soon_threadsafe), which needs nothing of it (microseconds)
        thread.join(_STOP_WAIT_S)
        raise


def interrupt_when_cancelled(engine: Engine) -> None:
    """Interrupt the statement running on a connection that SQLAlchemy invalidates because its
    task was cancelled (or interrupted otherwise), so that the cancellation ends it at once.

    Args:
        engine: The sync engine of an AsyncDatabase on aiosqlite.
    """

    @event.listens_for(engine.pool, "invalidate")
    def _interrupt(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        if exception is None or isinstance(exception, Exception) or dbapi_connection is None:
            return
        try:
            driver = dbapi_connection.driver_connection
            raw = driver._conn
            # sqlite3's interrupt() may be called from any thread: the statement raises
            # OperationalError in aiosqlite's. The ROLLBACK queued next, before the close:
            # the close leaves a connection whose cursor still holds the statement open
            # (sqlite3_close_v2), in its transaction and its write lock, until gc
            raw.interrupt()
            driver._tx.put_nowait((None, raw.rollback))
        except Exception:  # already closed: nothing runs
            return
