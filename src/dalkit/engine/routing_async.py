"""Replica routing for AsyncDatabase: the router of `_Router` (engine/routing.py) whose
monitor is an asyncio task, and the wait of a process's first routed transactions for the
monitor's first round.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from dalkit.engine import autoroute, probes, served_by
from dalkit.engine.lsn import parse_lsn
from dalkit.engine.routing import _Router
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.scope import TransactionScope

__all__ = ["AsyncReplicaRouter"]

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet, which only the async extras bring
    from sqlalchemy.ext.asyncio import AsyncEngine


class AsyncReplicaRouter(_Router["AsyncEngine"]):
    """The router of an AsyncDatabase; its monitor is an asyncio task of the loop that made
    the first routed read.

    Takes the arguments of the shared base: see `replica_router()` in engine/replica_setup.py.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task[None] | None = None
        self._first_round: asyncio.Future[None] | None = None  # the task's first round done
        self._ready_by = 0.0

    async def route(self, options: TransactionOptions) -> AsyncEngine | None:
        """The runner's ``route_read``: `bind_for()` a read-only transaction once the
        monitor's first round has probed the replicas (or its time is up); for another, only
        that wait (its plain reads may go to a replica, see engine/autoroute.py).

        Args:
            options: The transaction's options.

        Returns:
            A replica's engine, or None for the primary's.
        """
        first = self._first_round
        if first is None or not first.done():  # a replica not probed yet gets no reads
            if not options.read_only and self.route_reads != "auto":
                return None
            self._ensure_monitor()
            first = self._first_round
            if first is not None and first.get_loop() is asyncio.get_running_loop():
                await asyncio.wait([first], timeout=max(0.0, self._ready_by - time.monotonic()))
        return self.bind_for(options) if options.read_only else None

    def _forked(self) -> None:
        super()._forked()
        self._task = None  # the parent's loop does not run here: a task of the child's
        self._first_round = None

    def _after_write(self, scope: TransactionScope | None) -> Awaitable[None]:
        return self._record_position(scope)

    async def _record_position(self, scope: TransactionScope | None) -> None:
        started = time.monotonic()
        try:
            async with self.primary.connect() as connection:
                lsn = (
                    await connection.exec_driver_sql(
                        autoroute.PRIMARY_POSITION, execution_options=autoroute.PROBE
                    )
                ).scalar_one()
        except Exception as error:  # a connection lost right after COMMIT, a primary gone
            self._position_lost(error)
            return
        self._wrote(scope, lsn, started)

    def _ensure_monitor(self) -> None:
        task = self._task
        # a task of a loop that is not running (stopped, as pytest-asyncio's session loop is
        # while a test's loop runs, or closed) watches nothing: this loop gets its own
        if self._closed or (task is not None and not task.done() and task.get_loop().is_running()):
            return
        # a context of its own: not the one of the request whose read started it (its
        # transaction scope, tenant and read-your-writes position), as the sync monitor's thread
        loop = asyncio.get_running_loop()
        self.replicas.primary_unseen()  # since a close(), or the loop that stopped, maybe
        self._first_round = first = loop.create_future()
        self._ready_by = time.monotonic() + probes.probe_timeout(self.replicas.interval_s)
        self._task = loop.create_task(
            self._watch(first), name="dalkit-replica-monitor", context=contextvars.Context()
        )

    async def _watch(self, first: asyncio.Future[None]) -> None:
        me = asyncio.current_task()
        while not self._closed and self._task is me:  # another loop's monitor took over
            await self.check()
            if not first.done():
                first.set_result(None)
            await asyncio.sleep(self.replicas.interval_s)

    async def check(self) -> None:
        """One round of the monitor: the primary's position, then each replica's."""
        timeout = probes.probe_timeout(self.replicas.interval_s)
        try:
            started = time.monotonic()
            row = await asyncio.wait_for(
                _row(self.primary, probes.PRIMARY_SAMPLE, self._autocommit_reads), timeout
            )
            self.replicas.primary_at(time.monotonic(), parse_lsn(row[0]))
            self.replicas.primary_read(started, parse_lsn(row[1]))
        except Exception:  # lag is still measured, from the samples around the gap
            self.replicas.primary_unseen()
        for replica in self.replicas.replicas:
            try:
                row = await asyncio.wait_for(
                    _row(replica.engine, probes.REPLAY_POSITION, self._autocommit_reads),
                    timeout,
                )
            except Exception as error:
                self.replicas.failed(replica, probes.probe_error(error))
                continue
            replay, age = probes.replayed(row[:2])
            lsn = parse_lsn(replay or "0/0")
            self.replicas.observed(replica, time.monotonic(), lsn, age, row[2])

    async def close(self) -> None:
        """Stop the monitor task and close the replicas' pools; a later read starts it again."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        # another loop's task ends by itself when that loop runs again (_watch), or with it
        for replica in self.replicas.replicas:
            await replica.engine.dispose()
        self.replicas.forget()  # what it saw grows old: a later start probes before it routes
        self._first_round = None
        self._closed = False


async def _row(engine: AsyncEngine, statement: str, autocommit: bool) -> Sequence[Any]:
    """``statement``'s one row, in autocommit: no BEGIN, which a standby refuses when a
    read-only transaction's reset left psycopg asking for READ WRITE. Not for asyncpg behind
    PgBouncer (``autocommit`` False): its prepare and execute steps would reach two server
    connections outside a transaction block; asyncpg's plain BEGIN suits a standby. Followed by
    the ``host:port`` that answered (engine/served_by.py)."""
    with served_by.probing():  # a probe learns which host answers: never refused for it
        async with engine.connect() as connection:
            if autocommit:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await connection.exec_driver_sql(statement, execution_options=autoroute.PROBE)
            return (*result.one(), connection.info.get(served_by.SERVED_BY))
