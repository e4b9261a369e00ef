"""The observe package's errors and warnings: N+1 loads, unused eager loads, exceeded budgets.

```text
DalkitError
├── NPlusOneError               an N+1 query pattern under nplusone="raise", or a lazy load
│                               attempted by async code (SQLAlchemy's MissingGreenlet)
└── QueryBudgetExceededError    a query_budget() block ran more queries or time than allowed
UserWarning
└── NPlusOneWarning             an N+1 query pattern under nplusone="warn"
    └── UnusedEagerLoadWarning  a load=[...] relationship never read (warn and raise modes)
```
"""

from __future__ import annotations

from collections.abc import Sequence

from dalkit.errors import DalkitError

__all__ = [
    "NPlusOneError",
    "NPlusOneWarning",
    "QueryBudgetExceededError",
    "UnusedEagerLoadWarning",
]


class NPlusOneError(DalkitError):
    """Raised for an N+1 query pattern under ``nplusone="raise"``, and for a lazy load that
    async code cannot run.

    The message names the relationship, the count, the line of application code and the fix.
    """


class NPlusOneWarning(UserWarning):
    """Warned for an N+1 query pattern under ``nplusone="warn"``.

    The message is that of [`NPlusOneError`][dalkit.NPlusOneError]; the warning points at the
    line of application code that triggered it.
    """


class UnusedEagerLoadWarning(NPlusOneWarning):
    """Warned when a relationship a repository read loaded with ``load=[...]`` was never read
    before the transaction or the ``detect_nplusone()`` block ended (never raised, even under
    ``nplusone="raise"``).

    The message names the model and relationship, how many instances it was loaded for, the
    line of application code that made the read, and the fix: drop the path from ``load=``.
    """


class QueryBudgetExceededError(DalkitError):
    """Raised when a ``query_budget()`` block ran more statements (``max_queries``) or spent
    more database time (``max_ms``) than allowed.

    Args:
        message: What was overspent, and the statements.
        statements: ``(statement, milliseconds)`` of every statement the block ran, in order
            (kept as ``.statements``).
        max_queries: The statement budget, or None.
        max_ms: The time budget in milliseconds, or None.
    """

    def __init__(
        self,
        message: str,
        statements: Sequence[tuple[str, float]],
        max_queries: int | None,
        max_ms: float | None,
    ) -> None:
        super().__init__(message)
        self.statements = list(statements)
        self.max_queries = max_queries
        self.max_ms = max_ms
