"""Which host of a replica URL naming several (``h1:5432,h2:5432``) a pooled connection reached,
and the check, as a read checks one out, that it is the host the router's view of the replica
(its replayed position, its lag) was probed on.

Why. When ``h1`` goes down, new connections reach ``h2``, which may be further behind; until
the monitor's next probe (which then runs on ``h2``) the router held ``h1``'s position for the
name, and a read that had to see a commit ``h2`` had not replayed got ``h2``'s older rows. The
host is read from the driver once per connection (libpq's ``PQhost``, asyncpg's address: no
round trip), compared on checkout with a dict lookup; on a mismatch the replica is ejected as
down until the monitor probes it again, and the read raises ConnectionFailedError, which the
runner reruns on another node (as a read whose replica was lost). A replica named by one host
gets no listener at all.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from dalkit.engine.replicas import Replica, ReplicaSet
from dalkit.errors import ConnectionFailedError

__all__ = ["SERVED_BY", "host_of", "install", "probing"]

#: a pooled connection's ``info`` key: the ``host:port`` it reached (None: the driver says not)
SERVED_BY = "dalkit.replicas.served_by"
# the monitor's probes: they are what learns the host now answering, so they are never refused
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dalkit_replica_probing", default=False
)


def host_of(driver_connection: Any) -> str | None:
    """The ``host:port`` a driver's connection reached, without a round trip.

    Args:
        driver_connection: A psycopg (sync or async) or asyncpg connection.

    Returns:
        ``host:port``, or None when the driver does not say.
    """
    info = getattr(driver_connection, "info", None)
    if info is not None and hasattr(info, "host"):  # psycopg: libpq's PQhost and PQport
        return f"{info.host}:{info.port}"
    address = getattr(driver_connection, "_addr", None)  # asyncpg: the address it connected to
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None if address is None else str(address)


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """A block whose checkouts are the monitor's probes: never refused for their host."""
    reset = _PROBING.set(True)
    try:
        yield
    finally:
        _PROBING.reset(reset)


def install(replicas: ReplicaSet[Any], sync_engine: Engine, replica: Replica[Any]) -> None:
    """Record the host of each connection of ``replica``'s engine, and refuse a read on one that
    reached another host than the monitor's last probe (only for a multi-host replica).

    Args:
        replicas: The set ``replica`` belongs to (it is ejected there).
        sync_engine: The replica's engine (an AsyncEngine's ``sync_engine``).
        replica: The replica.
    """
    if "," not in replica.name:
        return

    @event.listens_for(sync_engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        driver = getattr(record, "driver_connection", None) or dbapi_connection
        record.info[SERVED_BY] = host_of(driver)

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        host, probed = record.info.get(SERVED_BY), replica.host
        if host == probed or host is None or probed is None or _PROBING.get():
            return
        reason = f"another host ({host}) than the one probed ({probed}) answers for it"
        replicas.failed(replica, reason)  # until the monitor's probe of that host
        raise ConnectionFailedError(
            f"replica {replica.name}: {reason}; its reads go elsewhere until it is probed"
        )
