"""Statement hooks: what dalkit runs before and after each statement a dialect's connections
execute, installed by wrapping the dialect's ``do_execute``, ``do_execute_no_params`` and
``do_executemany`` (the deferred BEGIN, the query statistics and the slow-query log).

Written by hand rather than with SQLAlchemy's ``before_cursor_execute`` and
``after_cursor_execute`` events: a single listener on an Engine makes every Connection join the
engine's event dispatcher and dispatch each of its events, about seven per transaction and 240
function calls, whether or not anything listens to them. With the per-checkout isolation
characteristic that went with them, that was an eighth of the CPU of a read-only request
(the async get by id of bench/peers: 388 -> 343 us of CPU per request). SQLAlchemy
calls these three methods for every statement the events saw (ORM, Core, text, DDL,
executemany and each insertmanyvalues batch), so the hooks see the same statements; and the
hooks skip the ones the events never saw (the dialect's first-connect probes). A statement
dalkit sends on the driver's own connection (the repositories' COPY) is told to the timers by
`driver_call()`, so the query statistics, slow-query log and budgets see it too. The
dialect's ``do_commit`` and ``do_rollback`` (and their two-phase twins) are wrapped too, once a
transaction-end hook is added (`StatementHooks.add_transaction_end`), in place of the engine's
``commit`` and ``rollback`` events.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

from sqlalchemy.engine import Dialect

from dalkit.engine.lean_served import serves_lean  # re-exported: what marks a hook lean-served

__all__ = [
    "After",
    "Before",
    "DriverCall",
    "Ended",
    "Failed",
    "StatementHooks",
    "Timer",
    "WRITES_OPTION",
    "add_before_everywhere",
    "driver_call",
    "hooks_for",
    "serves_lean",
    "track",
]

#: ``(cursor, statement, context)``, before the statement; it may send its own first
Before = Callable[[Any, str, Any], None]
#: ``(cursor, statement, parameters, context, executemany, seconds)``, after it succeeded
Timer = Callable[[Any, str, Any, Any, bool, float], None]
#: ``(cursor, statement, parameters, context, executemany, seconds, error)``, after it raised
Failed = Callable[[Any, str, Any, Any, bool, float, BaseException], None]
#: ``(cursor, statement, parameters, context, executemany)``, after it succeeded
After = Callable[[Any, str, Any, Any, bool], None]
#: ``(dbapi_connection, committed, foreign)``, after a COMMIT (True) or ROLLBACK (False) was
#: sent; ``foreign``: the transaction ended was prepared elsewhere (two-phase recovery), so what
#: it wrote is unknown here
Ended = Callable[[Any, bool, bool], None]

#: execution option naming the tables a statement writes, for a hook reading what it writes
#: (the query cache's invalidation) where its SQL does not say (a ``DO`` block, a function
#: that writes): ``text("DO ...").execution_options(dalkit_writes=())`` writes nothing
WRITES_OPTION = "dalkit_writes"

_HOOKS = "_dalkit_statement_hooks"
# hooks for the dialect of every engine dalkit builds (the audit's guard), and those dialects:
# an engine's dialect is wrapped only once such a hook exists, so until then it runs none
_EVERYWHERE: tuple[Before, ...] = ()
_TRACKED: weakref.WeakSet[Dialect] = weakref.WeakSet()


class StatementHooks:
    """The hooks of one dialect: tuples, swapped whole, so a statement running in another
    thread sees the old set or the new one and never a half-changed list."""

    def __init__(self, dialect: Dialect) -> None:
        self.before: tuple[Before, ...] = ()
        self.timers: tuple[Timer, ...] = ()
        self.after: tuple[After, ...] = ()
        self.failed: tuple[Failed, ...] = ()
        self.ends: tuple[Ended, ...] = ()
        # ids of the pool connections inside a two-phase end (a set: atomic under the GIL)
        self._two_phase: set[int] = set()
        self._dialect = dialect

    def add_first(self, hook: Before) -> None:
        """Run ``hook`` before every statement, before the hooks added earlier: one that may
        refuse the statement runs before any that sends something (the deferred BEGIN).

        Args:
            hook: Called with the cursor, the statement and the execution context.
        """
        if hook not in self.before:
            self.before = (hook, *self.before)

    def add_before(self, hook: Before) -> None:
        """Run ``hook`` before every statement, after the hooks added earlier.

        Args:
            hook: Called with the cursor, the statement and the execution context.
        """
        if hook not in self.before:
            self.before = (*self.before, hook)

    def add_timer(self, timer: Timer) -> None:
        """Run ``timer`` after every statement that succeeded, with its duration.

        Args:
            timer: Called with the cursor, statement, parameters, execution context,
                whether it was an executemany, and the seconds the driver took.
        """
        if timer not in self.timers:
            self.timers = (*self.timers, timer)

    def remove_timer(self, timer: Timer) -> None:
        """Stop running ``timer``; nothing when it was not added.

        Args:
            timer: A timer given to `add_timer`.
        """
        self.timers = tuple(t for t in self.timers if t != timer)

    def add_failed(self, hook: Failed) -> None:
        """Run ``hook`` after every statement that raised, while a timer is added (the
        statements the timers time): a constraint violation, a timeout, a lost connection.

        Args:
            hook: Called with the cursor, statement, parameters, execution context, whether
                it was an executemany, the seconds until it raised, and what it raised (the
                driver's own error, before SQLAlchemy wraps it); what the hook raises is
                dropped, so the statement's own error is what the caller gets.
        """
        if hook not in self.failed:
            self.failed = (*self.failed, hook)

    def remove_failed(self, hook: Failed) -> None:
        """Stop running ``hook``; nothing when it was not added.

        Args:
            hook: A hook given to `add_failed`.
        """
        self.failed = tuple(h for h in self.failed if h != hook)

    def tell_failed(
        self,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        many: bool,
        seconds: float,
        error: BaseException,
    ) -> None:
        """Run the `add_failed` hooks for a statement that raised ``error``.

        Args:
            cursor: Its cursor (what stands for one for a `driver_call`).
            statement: The statement.
            parameters: Its parameters.
            context: Its execution context.
            many: Whether it was an executemany.
            seconds: The time until it raised.
            error: What it raised.
        """
        for hook in self.failed:
            try:
                hook(cursor, statement, parameters, context, many, seconds, error)
            except Exception:  # the statement's own error is the one to raise
                continue

    def add_after(self, hook: After) -> None:
        """Run ``hook`` after every statement that succeeded, after the timers: a timer that
        does not need the duration.

        Args:
            hook: Called with the cursor, statement, parameters, execution context
                and whether it was an executemany.
        """
        if hook not in self.after:
            self.after = (*self.after, hook)

    def add_transaction_end(self, hook: Ended) -> None:
        """Run ``hook`` after every COMMIT and ROLLBACK of the dialect's connections.

        The first such hook wraps the dialect's ``do_commit`` and ``do_rollback`` as they are
        then (the deferred BEGIN's included, dalkit.transaction.deferred): SQLAlchemy calls them
        for every COMMIT and ROLLBACK of a Connection, a Session and the pool's reset on
        check-in, never for a savepoint. It wraps ``do_commit_twophase`` and
        ``do_rollback_twophase`` too: a two-phase transaction (``Session(twophase=True)``,
        ``Connection.begin_twophase()``, ``commit_prepared()``) ends through them, and psycopg
        ends it with the driver's ``tpc_commit()``, never calling ``do_commit``. The hook also
        runs when the driver's call raised: a COMMIT that failed may have been applied.

        Args:
            hook: Called with the pool's connection (its ``info`` is the pool record's),
                whether it was a COMMIT, and whether the transaction was prepared elsewhere.
        """
        if hook in self.ends:
            return
        if not self.ends:
            dialect: Any = self._dialect
            dialect.do_commit = self._ending(dialect.do_commit, committed=True)
            dialect.do_rollback = self._ending(dialect.do_rollback, committed=False)
            dialect.do_commit_twophase = self._ending_twophase(
                dialect.do_commit_twophase, committed=True
            )
            dialect.do_rollback_twophase = self._ending_twophase(
                dialect.do_rollback_twophase, committed=False
            )
        self.ends = (*self.ends, hook)

    def _ending(self, call: Callable[[Any], None], committed: bool) -> Callable[[Any], None]:
        def end(dbapi_connection: Any) -> None:
            try:
                call(dbapi_connection)
            finally:
                # not while a two-phase end runs on this connection: PostgreSQL's own (not
                # psycopg's) calls do_rollback after COMMIT PREPARED, to leave the block it
                # opened; that is not the end of what the transaction wrote
                if not self._two_phase or id(dbapi_connection) not in self._two_phase:
                    for hook in self.ends:
                        hook(dbapi_connection, committed, False)

        return end

    def _ending_twophase(self, call: Callable[..., None], committed: bool) -> Callable[..., None]:
        def end(connection: Any, xid: Any, is_prepared: bool = True, recover: bool = False) -> None:
            pooled = connection.connection  # what do_commit is given: the pool's connection
            self._two_phase.add(id(pooled))
            try:
                call(connection, xid, is_prepared, recover)
            finally:
                self._two_phase.discard(id(pooled))
                for hook in self.ends:
                    hook(pooled, committed, recover)

        return end

    def wrap(self, call: Callable[..., Any], many: bool) -> Callable[..., Any]:
        """``call`` (a dialect's execute method, taking ``context`` last) with the hooks around.

        Args:
            call: The dialect's own method.
            many: Whether it is ``do_executemany``.

        Returns:
            The method to put in its place.
        """

        def execute(cursor: Any, statement: str, *args: Any) -> Any:
            # args: (parameters, context) or, for do_execute_no_params, (context,)
            context = args[-1] if args else None
            if context is None or not context.root_connection._allow_autobegin:
                # the statements the engine events never saw: none outside an execution, and
                # the dialect's first-connect probes (server version...), which SQLAlchemy runs
                # on a connection of its own with autobegin and events off
                return call(cursor, statement, *args)
            for hook in self.before:
                hook(cursor, statement, context)
            timers, after = self.timers, self.after
            if not timers and not after:
                return call(cursor, statement, *args)
            started = perf_counter()
            # a try costs nothing until it raises (Python 3.11's zero-cost exceptions): a
            # statement that succeeds pays nothing for the failure hooks (timeit, 3.11.7, this
            # wrapper around a do-nothing execute with one timer: 1.5-1.9 us per call with the
            # try and without it, the same within the noise)
            try:
                result = call(cursor, statement, *args)
            except BaseException as error:
                if self.failed:
                    seconds = perf_counter() - started
                    parameters = args[0] if len(args) > 1 else None
                    self.tell_failed(cursor, statement, parameters, context, many, seconds, error)
                raise
            seconds = perf_counter() - started
            parameters = args[0] if len(args) > 1 else None
            for timer in timers:
                timer(cursor, statement, parameters, context, many, seconds)
            for then in after:
                then(cursor, statement, parameters, context, many)
            return result

        return execute


def hooks_for(dialect: Dialect) -> StatementHooks:
    """The statement hooks of ``dialect``, wrapping its execute methods the first time.

    Every engine has its own dialect, shared by its ``execution_options()`` copies and, for an
    AsyncEngine, by its sync engine: hooks installed once serve all of them.

    Args:
        dialect: An engine's dialect.

    Returns:
        Its hooks.
    """
    hooks: StatementHooks | None = dialect.__dict__.get(_HOOKS)
    if hooks is not None:
        return hooks
    hooks = StatementHooks(dialect)
    target: Any = dialect
    # the wrappers take ``context`` positionally: SQLAlchemy always passes it so
    target.do_execute = hooks.wrap(dialect.do_execute, many=False)
    target.do_execute_no_params = hooks.wrap(dialect.do_execute_no_params, many=False)
    target.do_executemany = hooks.wrap(dialect.do_executemany, many=True)
    setattr(target, _HOOKS, hooks)
    return hooks


def track(dialect: Dialect) -> None:
    """Have the hooks added with `add_before_everywhere` run on ``dialect`` too; for the
    dialect of every engine dalkit builds.

    Args:
        dialect: An engine's dialect.
    """
    for hook in _EVERYWHERE:
        hooks_for(dialect).add_first(hook)
    _TRACKED.add(dialect)


def add_before_everywhere(hook: Before) -> None:
    """Run ``hook`` before every statement of every engine dalkit built or builds (see
    `track`), before its other hooks.

    Args:
        hook: Called with the cursor, the statement and the execution context.
    """
    global _EVERYWHERE
    if hook in _EVERYWHERE:
        return
    _EVERYWHERE = (*_EVERYWHERE, hook)
    for dialect in list(_TRACKED):
        hooks_for(dialect).add_first(hook)


class DriverCall:
    """A statement sent on the driver's own connection, which SQLAlchemy never sees: what the
    timers are given in place of its cursor (``rowcount``) and execution context.

    Attributes:
        root_connection: The SQLAlchemy connection whose driver connection ran it.
        execution_options: That connection's execution options.
        compiled: Always None: no SQLAlchemy statement was compiled.
        rowcount: The rows it wrote.
    """

    __slots__ = ("compiled", "execution_options", "root_connection", "rowcount")

    def __init__(self, connection: Any, rowcount: int) -> None:
        self.root_connection = connection
        self.execution_options = connection.get_execution_options()
        self.compiled = None
        self.rowcount = rowcount


@contextmanager
def driver_call(connection: Any, statement: str, rowcount: int) -> Iterator[None]:
    """Time the block, which runs ``statement`` on ``connection``'s driver connection (COPY),
    and tell the dialect's timers once it succeeded, as for a statement SQLAlchemy sent.

    Args:
        connection: A SQLAlchemy ``Connection`` or ``AsyncConnection``.
        statement: The SQL the block sends, as it should be shown.
        rowcount: The rows the block writes when it succeeds.
    """
    sync = getattr(connection, "sync_connection", None) or connection
    hooks: StatementHooks | None = sync.dialect.__dict__.get(_HOOKS)
    if hooks is None or not hooks.timers:
        yield
        return
    started = perf_counter()
    try:
        yield
    except BaseException as error:
        failed = DriverCall(sync, -1)
        hooks.tell_failed(failed, statement, None, failed, False, perf_counter() - started, error)
        raise
    seconds = perf_counter() - started
    call = DriverCall(sync, rowcount)
    for timer in hooks.timers:
        timer(call, statement, None, call, False, seconds)
