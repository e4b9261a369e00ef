"""The observe package's errors and warning: N+1 loads and exceeded query budgets.

::

    DalkitError
    ├── NPlusOneError               an N+1 query pattern under nplusone="raise", or a lazy load
    │                               attempted by async code (SQLAlchemy's MissingGreenlet)
    └── QueryBudgetExceededError    a query_budget() block ran more queries or time than allowed
    UserWarning
    └── NPlusOneWarning             an N+1 query pattern under nplusone="warn"
"""

from __future__ import annotations

from collections.abc import Sequence

from dalkit.errors import DalkitError

__all__ = ["NPlusOneError", "NPlusOneWarning", "QueryBudgetExceededError"]


class NPlusOneError(DalkitError):
    """Raised for an N+1 query pattern under ``nplusone="raise"``, and for a lazy load that
    async code cannot run; the message names the relationship, the count, the line and the fix."""


class NPlusOneWarning(UserWarning):
    """Warned for an N+1 query pattern under ``nplusone="warn"`` (the message as for
    :class:`NPlusOneError`), pointing at the line of application code that triggered it."""


class QueryBudgetExceededError(DalkitError):
    """Raised when a ``query_budget()`` block ran more statements (``max_queries``) or spent
    more database time (``max_ms``) than allowed; ``.statements`` lists what ran."""

    def __init__(
        self,
        message: str,
        statements: Sequence[tuple[str, float]],
        max_queries: int | None,
        max_ms: float | None,
    ) -> None:
        super().__init__(message)
        #: ``(statement, milliseconds)`` of every statement the block ran, in order
        self.statements = list(statements)
        self.max_queries = max_queries
        self.max_ms = max_ms
