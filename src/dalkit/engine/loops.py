"""Which event loop an async pool serves, and what happens when another loop uses it.

An async pool's connections belong to the loop that opened them (asyncpg's futures, the pool's
own asyncio queue), and a loop cannot use another's. Each async pool remembers the loop of its
first checkout. Another loop's checkout then gets a fresh pool of the engine when the first loop
has stopped or closed (``asyncio.run()`` again, pytest-asyncio's loop per test), the old
connections let go of without that loop (SQLAlchemy's ``dispose(close=False)``), and raises
`EventLoopError` while the first loop still runs (in another thread). A pool's idle connections
are closed on their loop as it shuts down (``shutdown_asyncgens()``: ``asyncio.run()``,
``asyncio.Runner`` and pytest-asyncio call it), while asyncpg's can still say goodbye.
"""

from __future__ import annotations

import contextlib
import threading
from asyncio import AbstractEventLoop
from asyncio import _get_running_loop as running_loop  # None outside a loop, never raises
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util import queue as sqla_queue  # the pool's queue, as sqlalchemy.pool uses it

from dalkit.engine.loop_end import LoopEnd
from dalkit.errors import EventLoopError

__all__ = ["LOOP_BOUND_DRIVERS", "pool_for_running_loop", "running_loop", "settle_before_dispose"]

#: drivers whose connections can only be closed on the loop that opened them (its futures)
LOOP_BOUND_DRIVERS = frozenset({"asyncpg"})

# the slow path only (a pool's first checkout on a loop): two threads' loops meeting one pool
_lock = threading.Lock()
# the closers of the pools whose loop has not shut down yet: what keeps a pool let go of by its
# engine (swapped for another loop's) alive until its loop can close it
_closers: set[LoopEnd[Any]] = set()


async def _dispose_at_loop_end(pool: Any) -> None:
    _closers.discard(pool._dalkit_closer)
    pool._dalkit_closer = None
    await greenlet_spawn(pool.dispose)


def _drop_closer(pool: Any) -> None:
    """Forget ``pool``'s closer, if it has one: the pool is disposed, or let go of."""
    closer, pool._dalkit_closer = pool._dalkit_closer, None
    if closer is not None:
        _closers.discard(closer)
        closer.end()


def pool_for_running_loop(pool: Any) -> Any:
    """The pool a checkout on the running loop takes its connection from: ``pool`` on its own
    loop (the first checkout makes the running loop its own), a fresh one of the engine when
    ``pool``'s loop has stopped or closed. The slow path of a checkout, taken once per loop.

    Args:
        pool: The engine's async pool, whose loop is not the running one.

    Returns:
        The pool to check out from.

    Raises:
        EventLoopError: When ``pool``'s loop still runs, in another thread.
    """
    loop = running_loop()
    if loop is None:  # outside a loop: SQLAlchemy says what is wrong as it always has
        return pool
    left: list[Any] = []
    try:
        with _lock:  # never held across an await: a task of this thread would wait on it
            return _serve(pool, loop, left)
    finally:
        _close(left)


def _serve(pool: Any, loop: AbstractEventLoop, left: list[Any]) -> Any:
    while True:
        owner = pool._dalkit_loop
        if owner is loop:
            return pool
        if owner is None:
            _adopt(pool, loop)
            return pool
        _check_not_running(owner)
        if pool._dalkit_keeps_connections:
            # an in-memory SQLite database lives in its one connection: the pool keeps it (its
            # thread serves any loop); only its queue, bound to the old loop, is new
            _fresh_queue(pool)
            _adopt(pool, loop)
            return pool
        engine = pool._dalkit_engine()
        if engine is not None and engine.pool is pool:
            left += _let_go(pool, owner)
            engine.dispose(close=False)  # SQLAlchemy's way to give an engine a fresh pool
        elif engine is None:
            return pool
        pool = engine.pool  # fresh, or another thread's replacement: checked again


def settle_before_dispose(pool: Any) -> bool:
    """Before ``pool.dispose()``: whether it may close its idle connections on the running loop.

    Args:
        pool: An async pool about to be disposed.

    Returns:
        True when they belong to the running loop (or to none yet); False when their loop has
        stopped or closed: they are let go of (closed at their loop's end if it has not come).

    Raises:
        EventLoopError: When their loop still runs, in another thread.
    """
    loop = running_loop()
    _close_left_behind(pool, loop)
    owner = pool._dalkit_loop
    if owner is None or owner is loop:
        _drop_closer(pool)
        return True
    _check_not_running(owner)
    with _lock:
        left = _let_go(pool, owner)
    _close(left)
    return False


def _close_left_behind(pool: Any, loop: AbstractEventLoop | None) -> None:
    """Close the idle connections of the pools that ``pool``'s engine left to ``loop`` when
    another loop took over (a session-scoped fixture's loop, disposing after the tests)."""
    engine = pool._dalkit_engine()
    if loop is None or engine is None:
        return
    for closer in list(_closers):
        left = closer.value
        if closer.loop is not loop or left is None or left is pool:
            continue
        if left._dalkit_engine() is engine:
            _drop_closer(left)
            AsyncAdaptedQueuePool.dispose(left)  # its own loop: closed as usual


def _check_not_running(owner: AbstractEventLoop) -> None:
    if owner.is_running() and not owner.is_closed():
        raise EventLoopError(
            "this AsyncDatabase's connections belong to an event loop that is running in "
            "another thread, and a loop cannot use another's connections; "
            "create one AsyncDatabase per event loop (per thread)"
        )


def _adopt(pool: Any, loop: AbstractEventLoop) -> None:
    """Make ``loop`` ``pool``'s own, and have it close the pool's connections as it ends."""
    pool._dalkit_loop = loop
    # an in-memory database would be lost; a loop past shutdown_asyncgens() runs no closer
    if pool._dalkit_keeps_connections or getattr(loop, "_asyncgens_shutdown_called", False):
        return
    closer = LoopEnd(pool, _dispose_at_loop_end)
    pool._dalkit_closer = closer
    _closers.add(closer)
    for stale in [c for c in _closers if c.loop.is_closed()]:  # closed without a shutdown
        _closers.discard(stale)
        stale.end()


def _let_go(pool: Any, owner: AbstractEventLoop) -> list[Any]:
    """``pool``'s loop has stopped or closed. Closed: its idle connections are taken out, to be
    closed on the running loop (`_close`) when their driver allows it, else let go of.
    Stopped: its closer stays, to close them once that loop shuts down.

    Returns:
        The connection records to close.
    """
    if not owner.is_closed():
        return []
    _drop_closer(pool)
    records = _idle_records(pool)
    if pool._dialect.driver not in LOOP_BOUND_DRIVERS:
        return records  # psycopg's and aiosqlite's belong to no loop
    for record in records:  # asyncpg's: that loop closed them as it shut down, if it did
        record.dbapi_connection = None  # never closed through the dead loop
    return []


def _close(records: list[Any]) -> None:
    for record in records:
        record.close()  # as pool.dispose() closes it, awaited on the running loop


def _idle_records(pool: Any) -> list[Any]:
    """Take the idle connection records out of ``pool``'s queue (no waiting, no loop)."""
    records = []
    with contextlib.suppress(sqla_queue.Empty):
        while True:
            records.append(pool._pool.get_nowait())
    return records


def _fresh_queue(pool: Any) -> None:
    """Give ``pool`` a new queue (the old one's asyncio queue is bound to the old loop) holding
    the same idle connections."""
    old = pool._pool
    fresh = type(old)(old.maxsize, use_lifo=old.use_lifo)
    with contextlib.suppress(sqla_queue.Empty):
        while True:
            fresh.put_nowait(old.get_nowait())
    pool._pool = fresh
