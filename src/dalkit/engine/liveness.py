"""Whether a pooled PostgreSQL connection is still alive, decided at checkout without a round
trip on the hot path; replaces SQLAlchemy's pre-ping, which sends one on every checkout.

A server that restarts or ends a backend closes the socket, usually after an error message, so
the socket of an idle connection turns readable: one ``select()`` with a zero timeout sees it.
Only then, or when the connection has been idle longer than ``ping_after_idle_s`` (a peer that
vanished without closing, a NAT that dropped the flow), is a real ping sent. A connection that
fails it is replaced: raising DisconnectionError from the checkout event makes the pool discard
it and check out another. Measured on loopback (make bench, sync get by id): the pre-ping was
one round trip of four, about 15% of the request.
"""

from __future__ import annotations

import functools
import select
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

__all__ = ["DEFAULT_PING_AFTER_IDLE_S", "install", "peer_closed"]

#: a connection idle longer than this is pinged at its next checkout
DEFAULT_PING_AFTER_IDLE_S = 30.0

_RETURNED_AT = "dalkit.returned_at"
_WATCH = "dalkit.liveness_watch"


def peer_closed(dbapi_connection: Any, record_info: dict[Any, Any] | None = None) -> bool:
    """Whether a pooled connection is worth a ping before use, without a round trip.

    Args:
        dbapi_connection: The driver's connection (psycopg, or asyncpg behind its adapter).
        record_info: Its pool record's ``info``, where the way to watch it is kept between
            checkouts (none: worked out again).

    Returns:
        True when the server has closed the connection or sent it something unasked (an error
        before closing, a notice); False when nothing arrived or the socket cannot be seen.
    """
    watch = record_info.get(_WATCH) if record_info is not None else None
    if watch is None or watch[0] is not dbapi_connection:
        try:
            watch = _watch_of(dbapi_connection)
        except Exception:
            return True  # the driver already knows the connection is closed
        if record_info is not None:
            record_info[_WATCH] = watch
    _, closed, poller = watch
    if poller is None:
        return False
    try:
        if closed():
            return True  # checked at each checkout: a closed socket's number may be reused
    except Exception:
        return True
    # a poll object kept per connection, its socket registered once: 1.7 us a call where
    # select.select() of a list took 3.1-5.1 and finding the socket 1.7 more (timeit, a pooled
    # asyncpg connection, /work/prof23/writes/live_timeit.py)
    return bool(poller.poll(0))


def _watch_of(dbapi_connection: Any) -> tuple[Any, Callable[[], bool], Any]:
    """The connection, how to ask its driver whether it is closed, and a poll object watching
    its socket for input (None: the socket cannot be seen); raises when it is closed."""
    # the driver's own connection: SQLAlchemy's async adapters keep it as driver_connection
    driver = getattr(dbapi_connection, "driver_connection", None) or dbapi_connection
    closed: Callable[[], bool]
    if getattr(driver, "pgconn", None) is not None:  # psycopg, sync or async
        closed = functools.partial(getattr, driver, "closed")
    elif hasattr(driver, "is_closed"):  # asyncpg, behind the adapter
        closed = driver.is_closed
    else:
        return dbapi_connection, bool, None
    socket_fd = _socket_of(driver)
    if socket_fd is None:
        return dbapi_connection, closed, None
    poller = select.poll()
    poller.register(socket_fd, select.POLLIN)
    return dbapi_connection, closed, poller


def _socket_of(driver: Any) -> int | None:
    pgconn = getattr(driver, "pgconn", None)
    if pgconn is not None:  # psycopg, sync or async
        if driver.closed:
            raise ConnectionError("closed")
        return int(pgconn.socket)
    if driver.is_closed():  # asyncpg
        raise ConnectionError("closed")
    # asyncpg keeps its transport private, and has no public file number to offer
    transport = getattr(driver, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    return None if sock is None else int(sock.fileno())


def install(engine: Engine, *, ping_after_idle_s: float = DEFAULT_PING_AFTER_IDLE_S) -> None:
    """Check liveness at each checkout of ``engine``'s pool; SQLite files need no check.

    Args:
        engine: The sync engine (under an AsyncEngine too).
        ping_after_idle_s: Ping a connection idle longer than this even when nothing arrived.
    """
    if engine.dialect.name == "sqlite":
        return
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None:
            return  # opened for this checkout: nothing can have happened to it yet
        idle = time.monotonic() - returned_at
        if idle < ping_after_idle_s and not peer_closed(dbapi_connection, record.info):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"the connection failed its ping: {exc}") from exc
        if not alive:
            raise sa_exc.DisconnectionError("the connection failed its ping")
