"""Query budgets: a block may run at most so many statements, or spend so much database time.

A budget is a context variable, so concurrent threads and tasks are each held to their own.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager

from dalkit.engine.sql_literals import shown_sql
from dalkit.errors import ConfigurationError
from dalkit.observe.errors import QueryBudgetExceededError

__all__ = ["MAX_LISTED", "QueryBudget", "active_budgets", "query_budget"]

#: statements an overspent budget's message lists; the error's ``statements`` keeps them all
MAX_LISTED = 50

_TRANSACTION_START = re.compile(
    r"BEGIN(\s+(DEFERRED|IMMEDIATE|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?", re.IGNORECASE
)
_active: contextvars.ContextVar[tuple[QueryBudget, ...]] = contextvars.ContextVar(
    "dalkit_query_budgets", default=()
)


class QueryBudget:
    """What a ``query_budget()`` block ran so far; checked when the block ends.

    Attributes:
        owner: The observer whose engine is counted.
        max_queries: The statement budget, or None.
        max_ms: The time budget in milliseconds, or None.
        statements: ``(statement, milliseconds)`` in the order they ran.

    Raises:
        ConfigurationError: Neither budget is given, or one is negative.
    """

    def __init__(self, owner: object, max_queries: int | None, max_ms: float | None) -> None:
        if max_queries is None and max_ms is None:
            raise ConfigurationError("query_budget() needs max_queries, max_ms or both")
        if max_queries is not None and (not isinstance(max_queries, int) or max_queries < 0):
            raise ConfigurationError("max_queries must be a non-negative integer")
        if max_ms is not None and max_ms < 0:
            raise ConfigurationError("max_ms must be zero or positive")
        self.owner = owner
        self.max_queries = max_queries
        self.max_ms = max_ms
        self.statements: list[tuple[str, float]] = []

    @property
    def queries(self) -> int:
        """Statements run so far (transaction starts not counted)."""
        return len(self.statements)

    @property
    def total_ms(self) -> float:
        """Milliseconds the statements took so far."""
        return sum(ms for _, ms in self.statements)

    def add(self, statement: str, duration_s: float) -> None:
        """Count one statement.

        Args:
            statement: The SQL text.
            duration_s: The seconds it took.
        """
        # dalkit sends SQLite's BEGIN itself, PostgreSQL's drivers without a statement: skipped
        # so that a budget means the same on both
        if not _TRANSACTION_START.fullmatch(statement.strip()):
            self.statements.append((statement, duration_s * 1000.0))

    def check(self) -> None:
        """Check the budget.

        Raises:
            QueryBudgetExceededError: More statements ran, or more time was spent, than
                allowed; the message lists the statements, string literals masked.
        """
        over = []
        if self.max_queries is not None and self.queries > self.max_queries:
            over.append(f"{self.queries} statements ran, at most {self.max_queries} allowed")
        if self.max_ms is not None and self.total_ms > self.max_ms:
            over.append(f"{self.total_ms:.1f} ms spent, at most {self.max_ms:g} ms allowed")
        if not over:
            return
        listing = "\n".join(
            f"  {number}. [{ms:.1f} ms] {shown_sql(sql, 300)}"
            for number, (sql, ms) in enumerate(self.statements[:MAX_LISTED], 1)
        )
        if self.queries > MAX_LISTED:  # a loop of 20,000 statements made a 1.3 MB message
            listing += f"\n  ... {self.queries - MAX_LISTED} more (the error's statements)"
        raise QueryBudgetExceededError(
            f"query budget exceeded: {'; '.join(over)}:\n{listing}",
            self.statements,
            self.max_queries,
            self.max_ms,
        )


def active_budgets() -> tuple[QueryBudget, ...]:
    """The budgets of the ``query_budget()`` blocks open in this thread or task."""
    return _active.get()


@contextmanager
def query_budget(
    owner: object, max_queries: int | None = None, max_ms: float | None = None
) -> Iterator[QueryBudget]:
    """Count what ``owner``'s engine runs inside the block; raise at the end if over budget.

    An exception leaving the block is not masked by the budget check.

    Args:
        owner: The observer whose engine is counted.
        max_queries: At most this many statements.
        max_ms: At most this many milliseconds in the database.

    Yields:
        The budget, whose ``queries`` and ``statements`` grow as the block runs.

    Raises:
        QueryBudgetExceededError: When the block ends over budget.
    """
    budget = QueryBudget(owner, max_queries, max_ms)
    token = _active.set((*_active.get(), budget))
    try:
        yield budget
    finally:
        _active.reset(token)
    budget.check()
