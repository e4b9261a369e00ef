"""Replica routing for Database (and, through `_Router`, AsyncDatabase: engine/routing_async.py):
the bind of each read-only transaction (and of the plain reads of default transactions, see
engine/autoroute.py), the WAL position recorded after each write, the monitor thread and
rerouting a read whose replica failed. The decisions themselves live in engine/replicas.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.engine import Engine

from dalkit.engine import autoroute, probes, served_by
from dalkit.engine.lsn import format_lsn, parse_lsn
from dalkit.engine.replicas import Replica, ReplicaSet
from dalkit.engine.reroute import lost_connection
from dalkit.engine.statement_hooks import hooks_for, serves_lean
from dalkit.transaction import deferred
from dalkit.transaction.deferred import is_plain_read
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.scope import TransactionScope, current_scope

__all__ = ["ReplicaRouter"]

log = logging.getLogger("dalkit.replicas")

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet, which only the async extras bring
    from sqlalchemy.ext.asyncio import AsyncEngine


def _is_async(engine: object) -> bool:
    return hasattr(engine, "sync_engine")


def _sync(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if _is_async(engine) else engine  # type: ignore[union-attr,return-value]


E = TypeVar("E", Engine, "AsyncEngine")
# the insert position: with synchronous_commit=off a commit may still be past the write one
_PRIMARY_LSN = autoroute.PRIMARY_POSITION
_PROBE = autoroute.PROBE
_WROTE = "dalkit.replicas.wrote"
_PLAIN_READS = TransactionOptions(read_only=True)  # what a routed plain read runs with
_POSITION_LOST = "no WAL position read after a commit (%s): this context reads from the primary"


class _Router(Generic[E]):
    """What both routers share: the replica set, binds per options, write tracking.

    Args:
        owner: The transaction runner whose scopes are tracked (their writes, their reads).
        primary: The primary's engine.
        replicas: ``(name, engine, weight)`` of each replica.
        max_lag_s: A replica further behind than this is ejected until it catches up.
        interval_s: How often the monitor probes.
        autocommit_reads: Run reads on a replica in autocommit (no BEGIN/COMMIT round trips).
        route_reads: ``"auto"`` or ``"read_only"``; see docs/replicas.md.
    """

    def __init__(
        self,
        owner: object,
        primary: E,
        replicas: Sequence[tuple[str, E, int]],
        *,
        max_lag_s: float,
        interval_s: float,
        autocommit_reads: bool = True,
        route_reads: str = "auto",
    ) -> None:
        self.owner = owner  # the transaction runner whose scopes are tracked
        self.route_reads = route_reads
        self._autocommit_reads = autocommit_reads
        self.primary: E = primary
        self.replicas: ReplicaSet[E] = ReplicaSet(
            replicas, max_lag_s=max_lag_s, interval_s=interval_s
        )
        self._binds: dict[tuple[int, str | None], E] = {}
        self._bind_owner: dict[int, Replica[E]] = {}
        self._closed = False
        for replica in self.replicas.replicas:  # multi-host ones: engine/served_by.py
            served_by.install(self.replicas, _sync(replica.engine), replica)
        _ROUTERS.add(self)
        primary_sync: Engine = getattr(primary, "sync_engine", primary)  # type: ignore[arg-type]
        # a dialect hook, not a before_cursor_execute listener: an engine listener would make
        # every connection of the primary dispatch SQLAlchemy's events (engine/statement_hooks.py)
        hooks_for(primary_sync.dialect).add_before(serves_lean(self._track_write))  # lean-served

    def bind_for(self, options: TransactionOptions) -> E | None:
        """The engine of a read-only transaction, counted as routed.

        Args:
            options: The transaction's options.

        Returns:
            A replica's engine with the options applied, or None for the primary's.
        """
        if options.isolation == "SERIALIZABLE":
            return None  # a hot standby refuses SERIALIZABLE: only the primary can serve it
        self._ensure_monitor()
        replica = self.replicas.choose()
        if replica is None:
            return None
        key = (id(replica), options.isolation)
        bind = self._binds.get(key)
        if bind is None:
            marked = replica.engine.execution_options(**{autoroute.REPLICA_OPTION: replica.name})
            sync_engine = _sync(replica.engine)
            deferred.install(sync_engine)
            # known after the replica's first connection (the monitor's, or a read's); until
            # then a read-only transaction of its own, as on the primary
            known = hasattr(sync_engine.dialect, "default_isolation_level")
            if self._autocommit_reads and deferred.deferrable(sync_engine, options):
                # no BEGIN/COMMIT round trips for a read: its plain reads run in the driver's
                # autocommit, as a deferred read-only transaction's do on the primary, and
                # anything else (set_config(..., true)) in the transaction begun before it.
                # Not isolation_level="AUTOCOMMIT", which lost such a setting at once, and
                # which SQLAlchemy sets on every checkout and resets on every checkin: +19% a
                # read against the plain Database's, where this costs +0 to 2% (bench replicas)
                bind = marked.execution_options(**deferred.execution_options(options))
            else:  # its reset leaves psycopg asking READ WRITE: the monitor reads in autocommit
                bind = marked.execution_options(**options.execution_options("postgresql"))
            if known:
                self._binds[key] = bind
            self._bind_owner[id(bind)] = replica
        return bind

    def plain_read_bind(self) -> tuple[Engine, object] | None:
        """Where the plain reads of a default transaction go (see engine/autoroute.py).

        Returns:
            The replica's sync engine and the replica, or None for the primary.
        """
        bind = self.bind_for(_PLAIN_READS)
        if bind is None:
            return None
        self.replicas.routed_default()
        return _sync(bind), self._bind_owner[id(bind)]

    def replayed(self, name: str) -> int:
        """The WAL position the monitor last saw replica ``name`` replay (0: unknown)."""
        for replica in self.replicas.replicas:
            if replica.name == name:
                return replica.replay_lsn
        return 0

    @contextlib.contextmanager
    def requiring(self, position: int) -> Iterator[None]:
        """Inside the block, choose only replicas seen past ``position`` (else the primary)."""
        token = self.replicas.require(format_lsn(position))
        try:
            yield
        finally:
            self.replicas.release(token)

    def route_plain_reads(self, factory: Any) -> None:
        """Have the sessions ``factory`` makes route plain reads, under ``route_reads="auto"``.

        Args:
            factory: The database's sessionmaker or async_sessionmaker.
        """
        if self.route_reads == "auto":
            autoroute.install(factory, self)

    def reroute(self, session: Any, error: BaseException, read_only: bool = True) -> bool:
        """Whether an attempt may run again at once on another node; its replica is ejected.

        Args:
            session: The attempt's session.
            error: What the attempt raised.
            read_only: Whether the transaction was read-only.

        Returns:
            True when its replica lost or refused the connection and it wrote nothing (a
            read-only transaction, or a default one whose reads so far went to that replica).
        """
        replica = self._bind_owner.get(id(getattr(session, "bind", None))) if read_only else None
        if replica is None:
            routed = autoroute.replica_of(session)
            replica = routed if isinstance(routed, Replica) else None
        if replica is None or not lost_connection(error):
            return False
        self.replicas.mark_down(replica, error)
        log.warning("read on replica %s failed (%s); ejected until it answers", replica.name, error)
        return True

    def _track_write(self, cursor: Any, statement: str, context: Any) -> None:
        if is_plain_read(statement):
            return
        scope = _own_scope(current_scope(), self.owner)
        if scope is None:
            return
        if scope.state is None:
            scope.state = {}
        registered = scope.state.get(_WROTE)
        # registered in a savepoint that rolled back, it is gone: the writes after it were
        # then read back from a lagging replica
        if registered is None or registered not in (scope.callbacks or ()):
            # ranked first: the cache's invalidation (rank 1) tags its tokens with the position
            after_write = functools.partial(self._after_write, scope)
            scope.state[_WROTE] = scope.add(after_write, on_commit=True, robust=True, rank=2)

    def _wrote(self, scope: TransactionScope | None, lsn: str, started: float) -> None:
        position = parse_lsn(lsn)
        self.replicas.wrote(position, started)
        if scope is None:  # a write outside the runner (see wrote_outside)
            return
        # the query cache tags the commit's tokens with it (engine.autoroute.commit_position)
        if scope.state is None:
            scope.state = {}
        scope.state[autoroute.COMMIT_POSITION] = position

    def _position_lost(self, error: Exception) -> None:
        # the commit stands, and this context's reads must see it: the primary serves them
        # until a later read of its position settles where a replica must have replayed to
        self.replicas.position_lost()
        log.warning(_POSITION_LOST, probes.probe_error(error))

    def wrote_outside(self) -> Any:
        """Bind this context's reads to the primary's position now, as a commit does: for a
        write of the database's own outside the runner (``create_all``).

        Returns:
            None, or (async router) an awaitable.
        """
        return self._after_write(None)

    def _after_write(self, scope: TransactionScope | None) -> object:
        raise NotImplementedError

    def _forked(self) -> None:
        """In a forked child, which has none of its parent's threads: no monitor yet."""
        self.replicas.forked()

    def _ensure_monitor(self) -> None:
        raise NotImplementedError


class ReplicaRouter(_Router[Engine]):
    """The router of a Database; its monitor is a daemon thread.

    Takes the arguments of the shared base: see `replica_router()` in engine/replica_setup.py.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._probes = probes.ProbeThreads()
        self._first_round = threading.Event()  # set once the monitor has probed every replica
        self._ready_by = 0.0

    def route(self, options: TransactionOptions) -> Engine | None:
        """The runner's ``route_read``: `bind_for()` a read-only transaction; for another,
        under ``route_reads="auto"``, the wait for the monitor's first round (its plain reads
        ask `plain_read_bind()`, see engine/autoroute.py), as the async router's.

        Args:
            options: The transaction's options.

        Returns:
            A replica's engine, or None for the primary's.
        """
        if options.read_only:
            return self.bind_for(options)
        if self.route_reads == "auto" and not self._first_round.is_set():
            # the round also connects the primary: the runner defers a transaction's BEGIN
            # (which its reads need to be routed) once the server's default isolation is known
            self._ensure_monitor()
        return None

    def _after_write(self, scope: TransactionScope | None) -> None:
        started = time.monotonic()
        try:
            with self.primary.connect() as connection:
                result = connection.exec_driver_sql(_PRIMARY_LSN, execution_options=_PROBE)
                lsn = result.scalar_one()
        except Exception as error:  # a connection lost right after COMMIT, a primary gone
            self._position_lost(error)
            return
        self._wrote(scope, lsn, started)

    def _ensure_monitor(self) -> None:
        if self._thread is None and not self._closed:
            with self._lock:
                if self._thread is None:
                    self.replicas.primary_unseen()  # since a close() or a fork, maybe
                    self._ready_by = time.monotonic() + probes.probe_timeout(
                        self.replicas.interval_s
                    )
                    self._thread = threading.Thread(
                        target=self._watch, name="dalkit-replica-monitor", daemon=True
                    )
                    self._thread.start()
        # a replica not probed yet gets no reads. Not waited for on an event loop's thread,
        # where the ASGI middleware opens a sync Database's transactions: the loop stalled
        # for the round (the probe's limit with a hung replica); those read on the primary
        if not self._first_round.is_set() and not _on_event_loop():
            self._first_round.wait(max(0.0, self._ready_by - time.monotonic()))

    def _forked(self) -> None:
        super()._forked()
        # the parent's thread (and its probes, which may hold these) did not come along
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._probes = probes.ProbeThreads()
        self._first_round = threading.Event()

    def _watch(self) -> None:
        while not self._closed:
            self.check()
            self._first_round.set()
            if self._stop.wait(self.replicas.interval_s):
                return

    def check(self) -> None:
        """One round of the monitor: the primary's position, then each replica's."""
        timeout = probes.probe_timeout(self.replicas.interval_s)
        sample = functools.partial(probes.primary_position, self.primary)
        try:  # on a thread too: a hung primary stalled the monitor, its replicas' states frozen
            started, flushed, inserted = self._probes.run(probes.PRIMARY_PROBE, sample, timeout)
            self.replicas.primary_at(time.monotonic(), parse_lsn(flushed))
            self.replicas.primary_read(started, parse_lsn(inserted))
        except Exception:  # lag is still measured, from the samples around the gap
            self.replicas.primary_unseen()
        for replica in self.replicas.replicas:
            probe = functools.partial(probes.replay_position, replica.engine)
            try:  # on a thread: a hung replica's read blocks for good, and kept it admitted
                replay, age, host = self._probes.run(replica.name, probe, timeout)
            except Exception as error:
                self.replicas.failed(replica, probes.probe_error(error))
                continue
            self.replicas.observed(replica, time.monotonic(), parse_lsn(replay or "0/0"), age, host)

    def close(self) -> None:
        """Stop the monitor and close the replicas' pools; a later read starts it again."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for replica in self.replicas.replicas:
            replica.engine.dispose()
        self.replicas.forget()  # what it saw grows old: a later start probes before it routes
        self._first_round.clear()
        self._thread = None
        self._stop.clear()
        self._closed = False

    def release(self) -> None:
        """Stop the monitor and close the replicas' pools, for a database that is gone: its
        finalizer may run on the monitor's own thread, which is then not waited for."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)  # its check returns its connections first
        for replica in self.replicas.replicas:
            replica.engine.dispose()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _own_scope(scope: TransactionScope | None, owner: object) -> TransactionScope | None:
    for candidate in scope.ancestors() if scope is not None else ():
        if candidate.owner is owner and not candidate.finished:
            return candidate
    return None


#: every router, so that a forked child (a gunicorn --preload worker) starts a monitor of its
#: own: it believed its parent's thread watched, and kept routing on the view frozen at the fork
_ROUTERS: weakref.WeakSet[_Router[Any]] = weakref.WeakSet()


def _monitors_in_child() -> None:
    for router in list(_ROUTERS):
        router._forked()


os.register_at_fork(after_in_child=_monitors_in_child)
