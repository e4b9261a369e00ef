"""Replica routing for Database and AsyncDatabase: the bind of each read-only transaction, the
WAL position recorded after each write, the monitor (a thread, or an asyncio task) and rerouting
a read whose replica failed. The decisions themselves live in engine/replicas.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from dalkit.config import DatabaseConfig
from dalkit.engine.build import build_async_engine, build_engine
from dalkit.engine.pgbouncer import pgbouncer_config
from dalkit.engine.replicas import Replica, ReplicaSet, parse_lsn
from dalkit.errors import ConfigurationError, ConnectionFailedError, ConnectionLostError
from dalkit.transaction.deferred import is_plain_read
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.scope import TransactionScope, current_scope

__all__ = ["AsyncReplicaRouter", "ReplicaRouter", "failure_hook", "replica_router"]

log = logging.getLogger("dalkit.replicas")

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet, which only the async extras bring
    from sqlalchemy.ext.asyncio import AsyncEngine


def _is_async(engine: object) -> bool:
    return hasattr(engine, "sync_engine")


E = TypeVar("E", Engine, "AsyncEngine")
# the insert position: with synchronous_commit=off a commit may still be past the write one
_PRIMARY_LSN = "SELECT pg_current_wal_insert_lsn()::text"
# a promoted replica is no longer in recovery: its own position is what it has
_REPLAY_LSN = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text"
)
_WROTE = "dalkit.replicas.wrote"


class _Router(Generic[E]):
    """What both routers share: the replica set, binds per options, write tracking."""

    def __init__(
        self,
        owner: object,
        primary: E,
        replicas: Sequence[tuple[str, E, int]],
        *,
        max_lag_s: float,
        interval_s: float,
        autocommit_reads: bool = True,
    ) -> None:
        self.owner = owner  # the transaction runner whose scopes are tracked
        self._autocommit_reads = autocommit_reads
        self.primary: E = primary
        self.replicas: ReplicaSet[E] = ReplicaSet(
            replicas, max_lag_s=max_lag_s, interval_s=interval_s
        )
        self._binds: dict[tuple[int, str | None], E] = {}
        self._bind_owner: dict[int, Replica[E]] = {}
        self._closed = False
        primary_sync: Engine = getattr(primary, "sync_engine", primary)  # type: ignore[arg-type]
        event.listen(primary_sync, "before_cursor_execute", self._track_write)

    def bind_for(self, options: TransactionOptions) -> E | None:
        """The engine of a read-only transaction: a replica's, or None for the primary's."""
        if options.isolation == "SERIALIZABLE":
            return None  # a hot standby refuses SERIALIZABLE: only the primary can serve it
        self._ensure_monitor()
        replica = self.replicas.choose()
        if replica is None:
            return None
        key = (id(replica), options.isolation)
        bind = self._binds.get(key)
        if bind is None:
            if self._autocommit_reads and options.isolation in (None, "READ COMMITTED"):
                # a standby is read-only anyway: no BEGIN/COMMIT round trips for a read
                bind = replica.engine.execution_options(isolation_level="AUTOCOMMIT")
            else:
                bind = replica.engine.execution_options(**options.execution_options("postgresql"))
            self._binds[key] = bind
            self._bind_owner[id(bind)] = replica
        return bind

    def reroute(self, session: Any, error: BaseException) -> bool:
        """Whether a read-only attempt that failed with ``error`` may run again at once on
        another node: its replica lost or refused the connection (it is ejected)."""
        replica = self._bind_owner.get(id(getattr(session, "bind", None)))
        if replica is None or not _lost_connection(error):
            return False
        self.replicas.mark_down(replica, error)
        log.warning("read on replica %s failed (%s); running it elsewhere", replica.name, error)
        return True

    def _track_write(
        self,
        connection: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if is_plain_read(statement):
            return
        scope = _own_scope(current_scope(), self.owner)
        if scope is None:
            return
        if scope.state is None:
            scope.state = {}
        if _WROTE not in scope.state:
            scope.state[_WROTE] = True
            scope.add(self._after_write, on_commit=True, robust=True)

    def _after_write(self) -> object:
        raise NotImplementedError

    def _ensure_monitor(self) -> None:
        raise NotImplementedError


class ReplicaRouter(_Router[Engine]):
    """The router of a Database; its monitor is a daemon thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _after_write(self) -> None:
        with self.primary.connect() as connection:
            lsn = connection.exec_driver_sql(_PRIMARY_LSN).scalar_one()
        self.replicas.wrote(parse_lsn(lsn))

    def _ensure_monitor(self) -> None:
        if self._thread is not None or self._closed:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="dalkit-replica-monitor", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        while not self._closed:
            self.check()
            if self._stop.wait(self.replicas.interval_s):
                return

    def check(self) -> None:
        """One round of the monitor: the primary's position, then each replica's."""
        with contextlib.suppress(Exception):
            with self.primary.connect() as connection:
                lsn = connection.exec_driver_sql(_PRIMARY_LSN).scalar_one()
            self.replicas.primary_at(time.monotonic(), parse_lsn(lsn))
        for replica in self.replicas.replicas:
            try:
                with replica.engine.connect() as connection:
                    replay = connection.exec_driver_sql(_REPLAY_LSN).scalar_one()
            except Exception as error:
                self.replicas.failed(replica, _short(error))
                continue
            self.replicas.observed(replica, time.monotonic(), parse_lsn(replay or "0/0"))

    def close(self) -> None:
        """Stop the monitor and close the replicas' pools; a later read starts it again."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for replica in self.replicas.replicas:
            replica.engine.dispose()
        self._thread = None
        self._stop.clear()
        self._closed = False


class AsyncReplicaRouter(_Router["AsyncEngine"]):
    """The router of an AsyncDatabase; its monitor is an asyncio task of the loop that made
    the first routed read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task[None] | None = None

    def _after_write(self) -> Awaitable[None]:
        return self._record_position()

    async def _record_position(self) -> None:
        async with self.primary.connect() as connection:
            lsn = (await connection.exec_driver_sql(_PRIMARY_LSN)).scalar_one()
        self.replicas.wrote(parse_lsn(lsn))

    def _ensure_monitor(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name="dalkit-replica-monitor"
        )

    async def _watch(self) -> None:
        while not self._closed:
            await self.check()
            await asyncio.sleep(self.replicas.interval_s)

    async def check(self) -> None:
        """One round of the monitor: the primary's position, then each replica's."""
        timeout = max(1.0, 2 * self.replicas.interval_s)
        with contextlib.suppress(Exception):
            lsn = await asyncio.wait_for(_scalar(self.primary, _PRIMARY_LSN), timeout)
            self.replicas.primary_at(time.monotonic(), parse_lsn(lsn))
        for replica in self.replicas.replicas:
            try:
                replay = await asyncio.wait_for(_scalar(replica.engine, _REPLAY_LSN), timeout)
            except Exception as error:
                self.replicas.failed(replica, _short(error))
                continue
            self.replicas.observed(replica, time.monotonic(), parse_lsn(replay or "0/0"))

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        for replica in self.replicas.replicas:
            await replica.engine.dispose()
        self._closed = False


async def _scalar(engine: AsyncEngine, statement: str) -> str:
    async with engine.connect() as connection:
        value: str = (await connection.exec_driver_sql(statement)).scalar_one()
        return value


def _own_scope(scope: TransactionScope | None, owner: object) -> TransactionScope | None:
    for candidate in _ancestors(scope):
        if candidate.owner is owner and not candidate.finished:
            return candidate
    return None


def _ancestors(scope: TransactionScope | None) -> Iterator[TransactionScope]:
    if scope is not None:
        yield from scope.ancestors()


def _lost_connection(error: BaseException) -> bool:
    if isinstance(error, ConnectionLostError | ConnectionFailedError | OSError):
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return bool(error.connection_invalidated)
    cause = error.__cause__
    return cause is not None and cause is not error and _lost_connection(cause)


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


@overload
def replica_router(
    owner: object,
    primary: AsyncEngine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
) -> AsyncReplicaRouter | None: ...


@overload
def replica_router(
    owner: object,
    primary: Engine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
) -> ReplicaRouter | None: ...


def replica_router(
    owner: object,
    primary: Engine | AsyncEngine,
    config: DatabaseConfig,
    urls: Sequence[str | URL],
    weights: Sequence[int] | None,
    *,
    max_lag_s: float,
    interval_s: float,
    pgbouncer: bool,
) -> ReplicaRouter | AsyncReplicaRouter | None:
    """The router of a database with ``urls`` as replicas (None without any): each replica
    gets the primary's options, so the same pool sizes, timeouts and drivers."""
    if isinstance(urls, str | URL):
        raise ConfigurationError("replicas= takes a list of URLs")
    if not urls:
        if weights:
            raise ConfigurationError("replica_weights= without replicas=")
        return None
    if config.backend != "postgresql":
        raise ConfigurationError("read replicas need PostgreSQL (streaming replication)")
    weights = list(weights) if weights is not None else [1] * len(urls)
    if len(weights) != len(urls):
        raise ConfigurationError("replica_weights= needs one weight per replica URL")
    drivername = config.url.drivername
    configs = []
    for url in urls:
        replica = DatabaseConfig.coerce(config, url=make_url(url).set(drivername=drivername))
        configs.append(pgbouncer_config(replica) if pgbouncer else replica)
    names = _names(configs)
    # behind PgBouncer, asyncpg's statements run apart from their prepare step: only inside a
    # transaction block does PgBouncer keep both on one server connection
    autocommit_reads = not (pgbouncer and primary.dialect.driver == "asyncpg")
    if _is_async(primary):
        engines = [build_async_engine(c)[0] for c in configs]
        return AsyncReplicaRouter(
            owner,
            primary,
            list(zip(names, engines, weights, strict=True)),
            max_lag_s=max_lag_s,
            interval_s=interval_s,
            autocommit_reads=autocommit_reads,
        )
    sync_engines = [build_engine(c)[0] for c in configs]
    return ReplicaRouter(
        owner,
        primary,
        list(zip(names, sync_engines, weights, strict=True)),
        max_lag_s=max_lag_s,
        interval_s=interval_s,
    )


def failure_hook(
    router: ReplicaRouter | AsyncReplicaRouter | None, multi_host: bool
) -> Callable[[TransactionOptions, Any, Exception], str] | None:
    """The runner's ``on_failure``: ``"rerun"`` a read-only attempt at once elsewhere when its
    replica failed; ``"retry"`` a refused connection under a multi-host URL (the next attempt
    may reach the promoted primary; nothing ran, so retrying is safe); else ``""``."""
    if router is None and not multi_host:
        return None

    def on_failure(options: TransactionOptions, session: Any, error: Exception) -> str:
        if router is not None and options.read_only and router.reroute(session, error):
            return "rerun"
        if multi_host and isinstance(error, ConnectionFailedError):
            return "retry"
        return ""

    return on_failure


def _names(configs: Sequence[DatabaseConfig]) -> list[str]:
    """``host:port`` of each replica (never its password); numbered when they repeat."""
    names = [f"{c.url.host or 'localhost'}:{c.url.port or 5432}" for c in configs]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
