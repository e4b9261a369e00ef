"""``install(engine, settings) -> Observer``: the one hook the database calls. Listeners are
attached only for the features that are on, and nothing at all when every feature is off."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine, ExecutionContext
from sqlalchemy.orm import ORMExecuteState, Session

from dalkit.driver_errors import error_class
from dalkit.engine.sql_literals import as_read_by
from dalkit.engine.statement_hooks import hooks_for, serves_lean
from dalkit.errors import ConfigurationError
from dalkit.observe.budget import QueryBudget, active_budgets, query_budget
from dalkit.observe.eager import WATCH
from dalkit.observe.metrics import QueryMetrics
from dalkit.observe.nplusone import (
    BATCHED,
    NPlusOneDetector,
    NPlusOneMode,
    check_mode,
    refuse_async_column_load,
)
from dalkit.observe.querylog import QueryStats, SlowQueryLog
from dalkit.observe.settings import ObserveSettings, checked_top, set_default_nplusone
from dalkit.observe.shapes import shape_of
from dalkit.observe.slow_entry import is_disconnect, log_slow
from dalkit.query.plain_entities import COUNTED_PER_TRANSACTION, select_neutral

if TYPE_CHECKING:  # annotations only: sync code never needs the asyncio extension
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ObserveSettings", "Observer", "install", "observer_for", "set_default_nplusone"]

# keyed by dialect: an engine's execution_options() copies (which sessions may be bound to)
# share its dialect and its listeners, not its identity
_observers: weakref.WeakKeyDictionary[Dialect, Observer] = weakref.WeakKeyDictionary()
# uninstalled observers, by their engine's dialect: installing on the engine again revives
# the one its database holds (db.observer), with the read replicas it follows
_uninstalled: weakref.WeakKeyDictionary[Dialect, Observer] = weakref.WeakKeyDictionary()
_orm_listener_installed = False


def observer_for(engine: Engine | AsyncEngine) -> Observer | None:
    """The observer installed on ``engine``.

    Args:
        engine: An Engine or AsyncEngine.

    Returns:
        Its observer, or None when none was installed.
    """
    return _observers.get(_sync(engine).dialect)


def _sync(engine: Engine | AsyncEngine) -> Engine:
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):
        raise ConfigurationError(f"expected an Engine or AsyncEngine, got {type(engine).__name__}")
    return sync_engine


def install(engine: Engine | AsyncEngine, settings: object = None) -> Observer:
    """Observe ``engine`` (the sync engine of an AsyncEngine: the listeners serve both APIs).

    Installing again on the same engine returns the same observer, reconfigured when
    ``settings`` are given (unchanged with None); after its ``uninstall()`` too (the one
    ``db.observer`` holds), configured as a new one would be and still following the database's
    read replicas.

    Args:
        engine: An Engine or AsyncEngine.
        settings: What to observe, as for ``ObserveSettings.coerce``.

    Returns:
        The engine's observer.

    Raises:
        ConfigurationError: ``engine`` is no engine, or the settings are invalid.
    """
    sync_engine = _sync(engine)
    observer = _observers.get(sync_engine.dialect)
    if observer is not None and settings is None:
        return observer
    resolved = ObserveSettings.coerce(settings)
    if observer is None:
        observer = _uninstalled.pop(sync_engine.dialect, None)
        if observer is None:
            observer = Observer(sync_engine, resolved)
        else:
            for dialect in observer._followed:
                _observers[dialect] = observer
            observer.configure(resolved)
        _observers[sync_engine.dialect] = observer
    else:
        observer.configure(resolved)
    return observer


class Observer:
    """One engine's query statistics, slow-query log, N+1 detector, budgets and metrics.

    Args:
        engine: The sync engine observed.
        settings: What to observe.
    """

    def __init__(self, engine: Engine, settings: ObserveSettings) -> None:
        # weakly: the registry's value must not keep its key (the engine's dialect) alive, or
        # no database would ever be collected, with its pool and connections
        self._engine = weakref.ref(engine)
        self.stats: QueryStats | None = None
        self.slow_log: SlowQueryLog | None = None
        self.metrics: QueryMetrics | None = None
        self.nplusone = NPlusOneDetector()
        self._nplusone_on = False
        self._budgets_used = False
        self._listening = False
        # the dialects of the engines it follows (a database's read replicas)
        self._followed: weakref.WeakSet[Dialect] = weakref.WeakSet()
        self.configure(settings)

    def configure(self, settings: ObserveSettings) -> None:
        """Apply ``settings``; statistics already gathered survive unless they are turned off.

        Args:
            settings: What to observe from now on.
        """
        self.settings = settings
        if not settings.query_stats:
            self.stats = None
        elif self.stats is None:
            self.stats = QueryStats(settings.query_stats_size)
        else:  # resized, the shapes gathered stay (the most recently run, if fewer are kept)
            self.stats.resize(settings.query_stats_size)
        slow_ms = settings.slow_query_ms
        previous, self.slow_log = self.slow_log, None if slow_ms is None else SlowQueryLog(slow_ms)
        if self.slow_log is not None and previous is not None:  # the counters go on
            self.slow_log.count = previous.count
        detections = self.nplusone.detections
        self.nplusone = NPlusOneDetector(settings.nplusone_mode, settings.nplusone_threshold)
        self.nplusone.detections = detections
        self._nplusone_on = self.nplusone.mode != "off"
        self._refresh_listeners()

    # -- what the database exposes --------------------------------------------------------------
    def query_stats(self, top: int | None = 20) -> list[dict[str, Any]]:
        """Statistics per statement shape, slowest in total first.

        Args:
            top: How many shapes, 0 or more (ConfigurationError otherwise); None for all.

        Returns:
            Per shape: ``statement``, ``operation``, ``count``, ``total_ms``, ``mean_ms``,
            ``p95_ms``, ``max_ms`` and ``rows``; empty when statistics are off.
        """
        return [] if self.stats is None else self.stats.snapshot(checked_top(top))

    def pop_query_stats(self, top: int | None = 20) -> list[dict[str, Any]]:
        """Like ``query_stats``, then start over.

        Args:
            top: How many shapes; None for all.

        Returns:
            The statistics before the reset.
        """
        return [] if self.stats is None else self.stats.snapshot(checked_top(top), reset=True)

    @contextmanager
    def detect_nplusone(self, mode: NPlusOneMode = "raise") -> Iterator[None]:
        """N+1 detection in ``mode`` inside the block (this thread or task only); unused
        ``load=[...]`` paths of reads made in the block are warned about when it ends.

        Args:
            mode: ``"off"``, ``"warn"`` or ``"raise"``.

        Yields:
            Nothing: detection lasts for the with-block.

        Raises:
            ConfigurationError: ``mode`` is none of those.
        """
        check_mode(mode)
        if mode != "off" and not self._nplusone_on:
            self._nplusone_on = True
            self._refresh_listeners()
        with self.nplusone.scoped(mode), WATCH.scope():
            yield

    def query_budget(
        self, max_queries: int | None = None, max_ms: float | None = None
    ) -> AbstractContextManager[QueryBudget]:
        """A block that may run at most ``max_queries`` statements and spend at most
        ``max_ms`` in the database.

        Args:
            max_queries: At most this many statements.
            max_ms: At most this many milliseconds.

        Returns:
            A context manager yielding the [`QueryBudget`][dalkit.observe.QueryBudget]; it raises
            [`QueryBudgetExceededError`][dalkit.QueryBudgetExceededError] at the end of an
            overspent block.
        """
        if not self._budgets_used:
            self._budgets_used = True
            self._refresh_listeners()
        return query_budget(self, max_queries, max_ms)

    def enable_metrics(self) -> QueryMetrics:
        """Start the per-operation histograms the Prometheus collector reads.

        Returns:
            The histograms (the same ones when already started).
        """
        if self.metrics is None:
            self.metrics = QueryMetrics()
            self._refresh_listeners()
        return self.metrics

    @property
    def engine(self) -> Engine:
        """The sync engine observed.

        Raises:
            ConfigurationError: The engine was garbage-collected.
        """
        engine = self._engine()
        if engine is None:
            raise ConfigurationError("the engine this observer watched is gone")
        return engine

    def follow(self, engine: Engine | AsyncEngine) -> None:
        """Observe the statements of ``engine`` too, in this observer's figures: the engine of
        one of the database's read replicas, whose reads are the database's.

        Args:
            engine: An Engine or AsyncEngine.
        """
        dialect = _sync(engine).dialect
        if dialect is self.engine.dialect or dialect in self._followed:
            return
        self._followed.add(dialect)
        _observers[dialect] = self  # observer_for(engine) and the ORM listener find it
        if self._listening:
            self._hook(dialect, on=True)

    def uninstall(self) -> None:
        """Detach every listener; the observer keeps what it gathered."""
        self.stats = self.slow_log = self.metrics = None
        self._nplusone_on = self._budgets_used = False
        if self._engine() is not None:
            self._refresh_listeners()
            _observers.pop(self.engine.dialect, None)
            _uninstalled[self.engine.dialect] = self
        for dialect in list(self._followed):
            _observers.pop(dialect, None)

    @property
    def listening(self) -> bool:
        """Whether any listener is attached to the engine."""
        return self._listening

    # -- listeners ------------------------------------------------------------------------------
    def _refresh_listeners(self) -> None:
        wanted = bool(
            self.stats or self.slow_log or self.metrics or self._nplusone_on or self._budgets_used
        )
        if wanted != self._listening:
            for dialect in (self.engine.dialect, *self._followed):
                self._hook(dialect, on=wanted)
            self._listening = wanted
        # N+1 counts per connection's transaction: plain reads keep to the session's meanwhile
        self.engine.update_execution_options(**{COUNTED_PER_TRANSACTION: self._nplusone_on})
        if self._nplusone_on or self.engine.dialect.is_async:
            # async code cannot lazy-load, detection or not: say so before the driver fails
            _install_orm_listener()
        # repositories check WATCH.on: true only while some database detects N+1s
        others = any(o._nplusone_on for o in _observers.values() if o is not self)
        WATCH.switch(self._nplusone_on or others, _session_mode)

    def _hook(self, dialect: Dialect, *, on: bool) -> None:
        # statement hooks, not engine events (engine.statement_hooks); lean-served (query.lean_read)
        hooks = hooks_for(dialect)
        (hooks.add_timer if on else hooks.remove_timer)(serves_lean(self._after))
        (hooks.add_failed if on else hooks.remove_failed)(serves_lean(self._failed))

    def _after(
        self,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
        duration: float,
    ) -> None:
        # never None: the hooks run only for statements of a Connection's execution
        assert context is not None
        conn: Connection = context.root_connection
        statement = as_read_by(conn.dialect.name, statement)  # SQLite's comments do not nest
        shape = shape_of(statement)
        stats, slow_log, metrics = self.stats, self.slow_log, self.metrics
        if stats is not None:
            stats.record(shape, duration, cursor.rowcount if cursor is not None else -1)
        if metrics is not None:
            metrics.observe(shape.operation, duration)
        if slow_log is not None and duration >= slow_log.threshold_s:
            log_slow(slow_log, conn, cursor, statement, parameters, context, duration)
        if self._budgets_used:
            budgets: tuple[QueryBudget, ...] = active_budgets()
            for budget in budgets:
                if budget.owner is self:
                    budget.add(statement, duration)
        if self._nplusone_on:
            self.nplusone.on_statement(conn, statement, parameters, shape, context)

    def _failed(
        self,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
        duration: float,
        error: BaseException,
    ) -> None:
        # only the error's class is kept: its message may quote values ("Key (email)=(...)")
        stats, slow_log, metrics = self.stats, self.slow_log, self.metrics
        if stats is None and slow_log is None and metrics is None:
            return
        conn: Connection = context.root_connection
        statement = as_read_by(conn.dialect.name, statement)
        shape = shape_of(statement)
        label = error_class(error, is_disconnect=is_disconnect(conn, cursor, error))
        if stats is not None:
            stats.record_failure(shape, label)
        if metrics is not None:
            metrics.fail(shape.operation, label)
        if slow_log is not None and duration >= slow_log.threshold_s:
            log_slow(slow_log, conn, None, statement, parameters, context, duration, error=label)


def _session_observer(session: Session) -> Observer | None:
    observer = _bound_observer(session)
    return observer if observer is not None and observer._nplusone_on else None


def _bound_observer(session: Session) -> Observer | None:
    """The observer of the engine ``session`` is bound to, N+1 detection on or off."""
    bind = session.bind
    if bind is None:
        try:
            bind = session.get_bind()
        except Exception:  # an unbound session: nothing of ours
            return None
    dialect = getattr(bind, "dialect", None)
    return _observers.get(dialect) if dialect is not None else None


def _session_mode(session: Session) -> NPlusOneMode:
    observer = _session_observer(session)
    return "off" if observer is None else observer.nplusone.current_mode()


def _on_orm_execute(state: ORMExecuteState) -> None:
    if not state.is_select:
        return
    if state.is_column_load:
        observer = _bound_observer(state.session)
        if observer is not None and observer.engine.dialect.is_async:
            refuse_async_column_load(state)
        return
    if not state.is_relationship_load:
        return
    if state.lazy_loaded_from is None:
        # an eager load (selectinload sends one per 500 parents, each the same text)
        state.update_execution_options(**{BATCHED: True})
        return
    observer = _bound_observer(state.session)
    if observer is not None and (observer._nplusone_on or observer.engine.dialect.is_async):
        observer.nplusone.on_lazy_load(state, observer.engine.dialect.is_async)


def _install_orm_listener() -> None:
    # one listener on the Session class for every observer: sessions are made by factories the
    # observer never sees; it finds its observer through the session's engine
    global _orm_listener_installed
    if not _orm_listener_installed:
        # lazy loads only: plain entity reads of repositories stay plain
        event.listen(Session, "do_orm_execute", select_neutral(_on_orm_execute))
        _orm_listener_installed = True
