"""The transaction runner behind AsyncDatabase.transaction(), run_transaction() and
@transactional: one connection per transaction, propagation, savepoints, retries, callbacks.

The async source of ``runner.py`` (``make sync``), which differs where unasyncd renames: the
scope class, settle_async, finish_async, transaction_result_async.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dalkit.engine.options import is_memory_sqlite
from dalkit.errors import CommitOutcomeUnknownError, RetryExhaustedError
from dalkit.transaction import deferred, ended, finish_async
from dalkit.transaction.binds import bind_options, check_sqlite_can_start, pending_writes
from dalkit.transaction.functions import (
    SessionParameter,
    check_transaction_function,
    session_parameter,
    transaction_result_async,
)
from dalkit.transaction.options import TransactionOptions
from dalkit.transaction.retry import RetryPolicy, RetryState, is_retryable
from dalkit.transaction.scope import (
    AsyncTransactionScope,
    Callback,
    TransactionScope,
    current_scope,
    enter_scope,
    exit_scope,
    settle_async,
)
from dalkit.transaction.stats import TransactionStats

log = logging.getLogger("dalkit.transaction")

P = ParamSpec("P")
R = TypeVar("R")


class AsyncTransactionRunner:
    """Runs the transactions of one AsyncDatabase and keeps their statistics."""

    def __init__(
        self, engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
    ) -> None:
        self._engine = engine
        self._session_factory = session_factory
        self._dialect = engine.dialect.name
        # in-memory SQLite has one connection, which every transaction of this thread shares
        self._one_connection = is_memory_sqlite(engine.url)
        # the events sit on the sync engine, which is the engine itself in the sync twin
        self._sync_engine: Engine = getattr(engine, "sync_engine", engine)  # type: ignore[arg-type,unused-ignore]
        deferred.install(self._sync_engine)
        ended.install()
        self._binds: dict[tuple[str | None, bool], AsyncEngine] = {}
        self.stats = TransactionStats()
        # scale-out, set by the database: see dalkit.engine.routing and dalkit.engine.pgbouncer
        self.route_read: Callable[[TransactionOptions], Awaitable[AsyncEngine | None]] | None = None
        self.on_failure: Callable[[TransactionOptions, AsyncSession, Exception], str] | None = None
        self.defer_begin = True

    # -- the with-block ----------------------------------------------------------------------
    def transaction(self, options: TransactionOptions) -> _WithBlock:
        """One attempt, never retried: a with-block cannot run its body again."""
        return _WithBlock(self, options)

    async def _end_block(
        self, scope: AsyncTransactionScope, token: Any, started: float, error: BaseException | None
    ) -> None:
        """End a block's own transaction, whose body raised ``error`` (or None); raises what
        the block raises (``error`` itself, unless it is replaced)."""
        session: AsyncSession = scope.session
        options = scope.options
        try:
            try:
                if error is not None:
                    raise error
                if pending_writes(session):
                    await session.flush()
            except BaseException:
                await finish_async.discard(session)
                raise
            finally:
                scope.finished = True
                exit_scope(token)
            await finish_async.commit(session, options)
        except BaseException as failed:
            if self.on_failure is not None and isinstance(failed, Exception):
                # not run again (a block cannot be), but a replica that failed it is ejected,
                # so that the next transaction goes elsewhere
                self.on_failure(options, session, failed)
            await self._failed(scope, failed, started, rolled_back=0, retries=0)
            raise
        discarded = scope.discarded  # the block's own session.rollback(): nothing committed
        self.stats.record(
            options.stats_key, True, perf_counter() - started, 0, discarded, discarded=discarded
        )
        if scope.callbacks:
            await self._run_callbacks(scope.after_commit())

    # -- functions: run_transaction() and @transactional -----------------------------------
    async def run(
        self,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TransactionOptions,
        policy: RetryPolicy | None,
        *,
        inject: SessionParameter,
    ) -> R:
        """Call ``fn`` in a transaction; rerun the whole of it after a retryable failure when
        it is the outermost level (a joined or nested call lets its caller decide)."""
        current = _running()
        outer = self._joinable(current, options)
        if outer is not None:
            options.check_joinable(outer.options)
            if options.propagation == "nested":
                async with self._savepoint(outer):
                    return await self._call(fn, outer.session, args, kwargs, inject)
            return await self._call(fn, outer.session, args, kwargs, inject)

        started = perf_counter()
        state: RetryState | None = None  # built at the first failure: most calls never need it
        rolled_back = 0
        while True:
            scope = await self._open(options, current)
            try:
                result = await self._attempt(scope, fn, args, kwargs, inject)
            except Exception as error:
                seen = self.on_failure(options, scope.session, error) if self.on_failure else ""
                if seen == "rerun":  # scale-out: a read whose replica failed, elsewhere at once
                    await self._run_callbacks(scope.after_rollback())
                    continue
                if policy is None or not (seen == "retry" or is_retryable(error)):
                    await self._failed(scope, error, started, rolled_back, _retries(state))
                    raise
                if state is None:
                    state = RetryState(policy, started=started)
                try:
                    delay = state.next_delay(error)
                except RetryExhaustedError as exhausted:
                    await self._failed(scope, exhausted, started, rolled_back, _retries(state))
                    raise
                rolled_back += 1
                await self._run_callbacks(scope.after_rollback())
                log.debug("retrying in %.3f s after %s: %s", delay, type(error).__name__, error)
                try:
                    await asyncio.sleep(delay)
                except BaseException:  # cancelled while waiting: the call failed there
                    duration = perf_counter() - started  # attempt - 2: the retry never ran
                    self.stats.record(
                        options.stats_key, False, duration, state.attempt - 2, rolled_back
                    )
                    raise
                continue
            except BaseException as error:  # cancellation: rolled back, and never retried
                await self._failed(scope, error, started, rolled_back, _retries(state))
                raise
            break
        retries = 0 if state is None else _retries(state)  # a call fewer when none happened
        discarded = scope.discarded  # the function's own session.rollback(): nothing committed
        self.stats.record(
            options.stats_key,
            True,
            perf_counter() - started,
            retries,
            rolled_back + discarded,
            discarded=discarded,
        )
        if scope.callbacks:
            await self._run_callbacks(scope.after_commit())
        return result

    def decorate(
        self,
        fn: Callable[..., Awaitable[R]],
        options: TransactionOptions,
        policy: RetryPolicy | None,
    ) -> Callable[..., Awaitable[R]]:
        """``fn`` wrapped by `run()`; how it takes its session is decided once."""
        check_transaction_function(fn, is_async=AsyncTransactionScope.is_async)
        inject = session_parameter(fn)

        @functools.wraps(fn)
        async def transactional(*args: Any, **kwargs: Any) -> R:
            passed = inject if "session" not in kwargs else None
            return await self.run(fn, args, kwargs, options, policy, inject=passed)

        return transactional

    # -- the steps -----------------------------------------------------------------------------
    def _joinable(
        self, current: TransactionScope | None, options: TransactionOptions
    ) -> AsyncTransactionScope | None:
        """The transaction these options join or nest in, if any. A requires_new transaction
        joins none, so a task or thread started inside a transaction may ask for one; nor does
        a transaction inside AUTOCOMMIT (`TransactionOptions.runs_apart`)."""
        # only the innermost running transaction can be joined: one of another database in
        # between means current_session() must keep naming that one's session
        if options.propagation == "requires_new":
            return None
        if isinstance(current, AsyncTransactionScope) and current.owner is self:
            current.check_holder()
            return None if options.runs_apart(current.options) else current
        return None

    async def _open(
        self, options: TransactionOptions, current: TransactionScope | None
    ) -> AsyncTransactionScope:
        if current is not None and self._dialect == "sqlite":
            check_sqlite_can_start(self, self._one_connection, options, current)
        bind = await self.route_read(options) if self.route_read else None  # a replica, or None
        # looked up here rather than in _new_bind: every transaction pays for this line
        bind = bind or self._binds.get((options.isolation, options.read_only))
        if bind is None:
            bind = self._new_bind(options)
        session = self._session_factory(bind=bind)
        return AsyncTransactionScope(self, session, options, current)

    def _new_bind(self, options: TransactionOptions) -> AsyncEngine:
        """The engine whose connections have these options: the pool is shared, and each
        connection gets the characteristics on checkout and loses them on return."""
        sync_engine = self._sync_engine
        execution_options = bind_options(sync_engine, options, defer_begin=self.defer_begin)
        bind = self._engine
        if execution_options:
            bind = self._engine.execution_options(**execution_options)
        if self._dialect != "postgresql" or hasattr(sync_engine.dialect, "default_isolation_level"):
            # kept once the server's default isolation is known: deferrable() depends on it
            self._binds[(options.isolation, options.read_only)] = bind
        return bind

    async def _attempt(
        self,
        scope: AsyncTransactionScope,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inject: SessionParameter,
    ) -> R:
        """One run of ``fn`` in ``scope``: committed if it returns, rolled back if it raises."""
        session: AsyncSession = scope.session
        token = enter_scope(scope)
        try:
            result = await self._call(fn, session, args, kwargs, inject)
            # flushed apart from COMMIT, so a failure here is known not to have committed
            if pending_writes(session):
                await session.flush()
        except BaseException:
            await finish_async.discard(session)
            raise
        finally:
            scope.finished = True
            exit_scope(token)
        await finish_async.commit(session, scope.options)
        return result

    @asynccontextmanager
    async def _savepoint(self, scope: AsyncTransactionScope) -> AsyncIterator[None]:
        session: AsyncSession = scope.session
        # begin_nested() flushes what is pending: that flush belongs to the outer level (a
        # savepoint rolled back does not undo it), so it runs here, before the level is pushed,
        # and what it wrote is the outer level's (the cache invalidates it at the commit)
        if pending_writes(session):
            await session.flush()
        scope.savepoint_started()
        try:
            async with session.begin_nested():
                yield
        except BaseException:
            scope.savepoint_rolled_back()
            raise
        scope.savepoint_released()

    @staticmethod
    async def _call(
        fn: Callable[..., Awaitable[R]],
        session: AsyncSession,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inject: SessionParameter,
    ) -> R:
        if inject == "first":
            returned = fn(session, *args, **kwargs)
        elif inject == "keyword":
            returned = fn(*args, session=session, **kwargs)
        elif inject == "second" and args:  # after the first argument: a method's self or cls
            returned = fn(args[0], session, *args[1:], **kwargs)
        elif inject == "second":
            returned = fn(*args, session=session, **kwargs)
        else:
            returned = fn(*args, **kwargs)
        # checked, joined or not: a coroutine returned would run after the commit, a plain
        # function's result (async) cannot be awaited
        return await transaction_result_async(fn, returned)

    async def _failed(
        self,
        scope: AsyncTransactionScope,
        error: BaseException,
        started: float,
        rolled_back: int,
        retries: int,
    ) -> None:
        """Book-keeping for a transaction call that ends by raising ``error``."""
        notes = getattr(error, "__notes__", ())
        unknown = (
            isinstance(error, CommitOutcomeUnknownError) or finish_async.OUTCOME_UNKNOWN in notes
        )
        self.stats.record(
            scope.options.stats_key,
            False,
            perf_counter() - started,
            retries,
            rolled_back + (0 if unknown else 1),
            outcome_unknown=unknown,
            discarded=isinstance(error, ended.RollbackRequested),  # a unit of work's rollback()
        )
        if not unknown and scope.callbacks:
            # neither set of callbacks fits a transaction that may or may not have committed
            await self._run_callbacks(scope.after_rollback())

    async def _run_callbacks(self, callbacks: list[Callback]) -> None:
        for callback in callbacks:
            try:
                await settle_async(callback.fn())
            except Exception:
                if not callback.robust:
                    raise
                kind = "on_commit" if callback.on_commit else "on_rollback"
                log.exception("%s callback %s failed", kind, callback.name)


class _WithBlock:
    """`AsyncTransactionRunner.transaction`'s block: joins the transaction around it, opens a
    savepoint in it, or runs its own. A class, not an ``@asynccontextmanager`` generator, whose
    machinery cost 1.7 us of CPU per block (3.4 -> 0.6 us, timeit, /work/prof26/scope6/cm.py)."""

    __slots__ = ("_nested", "_options", "_runner", "_scope", "_started", "_token")

    def __init__(self, runner: AsyncTransactionRunner, options: TransactionOptions) -> None:
        self._runner, self._options, self._started = runner, options, 0.0
        self._token: Any = None
        self._scope: AsyncTransactionScope | None = None  # None: joined (or nested) only
        self._nested: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> AsyncSession:
        runner, options = self._runner, self._options
        current = _running()
        outer = runner._joinable(current, options)
        if outer is not None:
            options.check_joinable(outer.options)
            if options.propagation == "nested":
                nested = runner._savepoint(outer)
                await nested.__aenter__()
                self._nested = nested
            return outer.session  # type: ignore[no-any-return]
        self._started = perf_counter()
        scope = self._scope = await runner._open(options, current)
        self._token = enter_scope(scope)
        return scope.session  # type: ignore[no-any-return]

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        scope = self._scope
        if scope is None:  # joined: nothing to end; nested: the savepoint never suppresses
            if self._nested is not None:
                await self._nested.__aexit__(kind, error, traceback)
            return
        try:
            await self._runner._end_block(scope, self._token, self._started, error)
        except BaseException as raised:
            if raised is not error:
                raise
            # the body's own error, not replaced: the with-statement re-raises it, as it came
            raised.__traceback__ = traceback


def _running() -> TransactionScope | None:
    """The innermost transaction of this context that has not ended: a task started inside a
    transaction that has since finished, or that another task is ending, gets a transaction
    of its own."""
    current = current_scope()
    if current is None or not (current.finished or current.ending is not None):
        return current
    return current.live()


def _retries(state: RetryState | None) -> int:
    return state.attempt - 1 if state is not None else 0
