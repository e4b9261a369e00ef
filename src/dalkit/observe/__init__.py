"""Query observability: the slow-query log, query statistics, N+1 and unused eager load
detection, query budgets, EXPLAIN (of statements, builders and repository reads), table
statistics, index advice; the Prometheus collector is ``dalkit.observe.prometheus``.
"""

from __future__ import annotations

from dalkit.observe.advice import IndexAdvice, index_advice, index_advice_async
from dalkit.observe.budget import QueryBudget
from dalkit.observe.errors import (
    NPlusOneError,
    NPlusOneWarning,
    QueryBudgetExceededError,
    UnusedEagerLoadWarning,
)
from dalkit.observe.explain import PlanWarning, QueryPlan, explain, explain_async
from dalkit.observe.install import (
    Observer,
    ObserveSettings,
    install,
    observer_for,
    set_default_nplusone,
)
from dalkit.observe.nplusone import NPlusOneMode
from dalkit.observe.repo_query import RepositoryQuery
from dalkit.observe.table_stats import TableStats, table_stats, table_stats_async

__all__ = [
    "IndexAdvice",
    "NPlusOneError",
    "NPlusOneMode",
    "NPlusOneWarning",
    "ObserveSettings",
    "Observer",
    "PlanWarning",
    "QueryBudget",
    "QueryBudgetExceededError",
    "QueryPlan",
    "RepositoryQuery",
    "TableStats",
    "UnusedEagerLoadWarning",
    "explain",
    "explain_async",
    "index_advice",
    "index_advice_async",
    "install",
    "observer_for",
    "set_default_nplusone",
    "table_stats",
    "table_stats_async",
]
