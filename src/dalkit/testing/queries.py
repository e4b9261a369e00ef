"""Counting the SQL statements an engine sends, so tests can pin down N+1 queries.

The statements SQLAlchemy sends are heard through its ``before_cursor_execute`` event; the ones
dalkit sends on the driver's own connection (the repositories' COPY on PostgreSQL), which
SQLAlchemy never sees, through the dialect's timers (`dalkit.engine.statement_hooks`). A
database's replicas are engines of their own, heard too; dalkit's own probes (the replica
monitor's, the WAL positions read after writes: `dalkit.engine.autoroute.PROBE`) are not counted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import event
from sqlalchemy.engine import Engine

from dalkit.engine.autoroute import PROBE
from dalkit.engine.sql_literals import shown_sql
from dalkit.engine.statement_hooks import DriverCall, hooks_for

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["QueryCounter", "QueryTarget", "assert_max_queries", "count_queries"]

# dalkit opens SQLite transactions itself; PostgreSQL's drivers do it without a
# cursor statement. Skipping these keeps counts equal on both backends.
_TRANSACTION_START = re.compile(
    r"BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?", re.IGNORECASE
)


class HasEngine(Protocol):
    """Anything with an ``engine`` attribute, such as ``dalkit.Database`` and ``AsyncDatabase``."""

    @property
    def engine(self) -> Engine | AsyncEngine: ...


QueryTarget: TypeAlias = "Engine | AsyncEngine | HasEngine"


class QueryCounter:
    """The statements seen so far; safe to fill from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statements: list[str] = []

    @property
    def count(self) -> int:
        """How many statements were seen."""
        with self._lock:
            return len(self._statements)

    @property
    def statements(self) -> list[str]:
        """The statements seen, in order (a copy)."""
        with self._lock:
            return list(self._statements)

    def record(self, statement: str) -> None:
        """Count ``statement``, unless it only begins a transaction.

        Args:
            statement: The SQL text.
        """
        if _TRANSACTION_START.fullmatch(statement.strip()):
            return
        with self._lock:
            self._statements.append(statement)

    def __repr__(self) -> str:
        return f"QueryCounter(count={self.count})"


@contextmanager
def count_queries(target: QueryTarget) -> Iterator[QueryCounter]:
    """Count the statements ``target`` executes inside the block, on any of its connections
    (a database's replicas' too), but for dalkit's own replica monitor and position probes.

    Args:
        target: An engine, an async engine, or anything with an ``engine`` (a database).

    Yields:
        The counter, filled while the block runs.

    Raises:
        TypeError: When ``target`` has no engine.

    Examples:
        ```python
        with count_queries(db) as counter:
            UserRepository(session).list()
        print(counter.count, counter.statements)
        ```
    """
    engines = [_sync_engine(target), *_replica_engines(target)]
    counter = QueryCounter()

    def on_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        options = getattr(context, "execution_options", None) or {}
        if not all(options.get(key) == value for key, value in PROBE.items()):
            counter.record(statement)

    def on_driver_call(
        cursor: Any, statement: str, parameters: Any, context: Any, many: bool, seconds: float
    ) -> None:
        # the timers hear every statement; the event above heard all but these already
        if isinstance(context, DriverCall):
            counter.record(statement)

    # each engine has a dialect of its own: its timers hear only this engine's statements
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        hooks_for(engine.dialect).add_timer(on_driver_call)
    try:
        yield counter
    finally:
        for engine in engines:
            hooks_for(engine.dialect).remove_timer(on_driver_call)
            event.remove(engine, "before_cursor_execute", on_execute)


@contextmanager
def assert_max_queries(target: QueryTarget, limit: int) -> Iterator[QueryCounter]:
    """Fail with the statement list (string literals masked) when the block runs more than
    ``limit`` statements.

    Args:
        target: An engine, an async engine, or anything with an ``engine`` (a database).
        limit: The most statements the block may run.

    Yields:
        The counter, filled while the block runs.

    Raises:
        AssertionError: After the block, when it ran more than ``limit`` statements.
    """
    with count_queries(target) as counter:
        yield counter
    # Reached only when the block succeeded: its own error is the more useful one.
    if counter.count > limit:
        # each string literal as '***', as the query budget and the slow-query log show them
        listing = "\n".join(
            f"{number}. {shown_sql(sql, 2000)}" for number, sql in enumerate(counter.statements, 1)
        )
        raise AssertionError(f"expected at most {limit} queries, {counter.count} ran:\n{listing}")


def _sync_engine(target: object) -> Engine:
    # Duck-typed so that importing this module never needs the asyncio extra.
    if isinstance(target, Engine):
        return target
    sync_engine = getattr(target, "sync_engine", None)
    if isinstance(sync_engine, Engine):
        return sync_engine
    inner = getattr(target, "engine", None)
    if inner is not None and inner is not target:
        return _sync_engine(inner)
    raise TypeError(
        f"expected an Engine, AsyncEngine or an object with .engine, got {type(target).__name__}"
    )


def _replica_engines(target: object) -> list[Engine]:
    # a Database's (or AsyncDatabase's) replicas; an engine has none
    return [_sync_engine(engine) for engine in getattr(target, "replica_engines", ())]
