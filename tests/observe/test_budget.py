"""Query budgets: a block over its statement count or time raises with the statements."""

from __future__ import annotations

import asyncio

import pytest

from dalkit import AsyncDatabase, Database
from dalkit.errors import ConfigurationError
from dalkit.observe import QueryBudgetExceededError, budget, install


def test_a_block_within_budget_passes_and_reports_what_ran(db: Database) -> None:
    observer = install(db.engine, {"query_stats": False})
    try:
        with observer.query_budget(max_queries=2) as budget:
            db.sql("SELECT 1 AS a")
            db.sql("SELECT 2 AS b")
        assert budget.queries == 2
        assert budget.total_ms >= 0
    finally:
        observer.uninstall()


def test_one_statement_too_many_raises_with_the_statements(db: Database) -> None:
    observer = install(db.engine)
    try:
        with pytest.raises(QueryBudgetExceededError, match="3 statements ran, at most 2") as caught:
            with observer.query_budget(max_queries=2):
                for n in range(3):
                    db.sql(f"SELECT {n} AS n")
        assert [sql for sql, _ in caught.value.statements] == [
            "SELECT 0 AS n",
            "SELECT 1 AS n",
            "SELECT 2 AS n",
        ]
        assert "SELECT 2 AS n" in str(caught.value)
    finally:
        observer.uninstall()


def test_a_budget_overspent_by_a_loop_lists_its_first_statements_only(db: Database) -> None:
    # every statement was listed: a loop of 20,000 made a message of 1.3 MB
    observer = install(db.engine, {"query_stats": False})
    try:
        with pytest.raises(QueryBudgetExceededError) as caught:
            with observer.query_budget(max_queries=5), db.connection() as connection:
                for n in range(500):
                    connection.exec_driver_sql(f"SELECT {n} AS n")
        assert len(caught.value.statements) == 500  # all kept for the caller
        lines = str(caught.value).splitlines()
        assert len(lines) == 1 + budget.MAX_LISTED + 1
        assert lines[-1].strip() == f"... {500 - budget.MAX_LISTED} more (the error's statements)"
    finally:
        observer.uninstall()


def test_a_time_budget_counts_database_time(db: Database) -> None:
    observer = install(db.engine)
    try:
        with pytest.raises(QueryBudgetExceededError, match="ms spent, at most 0 ms"):
            with observer.query_budget(max_ms=0):
                db.sql("SELECT 1 AS a")
    finally:
        observer.uninstall()


def test_an_error_in_the_block_is_not_masked(db: Database) -> None:
    observer = install(db.engine)
    try:
        with pytest.raises(ZeroDivisionError), observer.query_budget(max_queries=0):
            db.sql("SELECT 1 AS a")
            _ = 1 / 0
    finally:
        observer.uninstall()


def test_a_budget_needs_a_limit(db: Database) -> None:
    observer = install(db.engine)
    try:
        with pytest.raises(ConfigurationError), observer.query_budget():
            pass
    finally:
        observer.uninstall()


async def test_concurrent_tasks_keep_their_own_budget(async_db: AsyncDatabase) -> None:
    observer = install(async_db.engine)

    async def run(count: int) -> int:
        with observer.query_budget(max_queries=count) as budget:
            for _ in range(count):
                await async_db.sql("SELECT 1 AS a")
                await asyncio.sleep(0)
        return budget.queries

    try:
        assert list(await asyncio.gather(run(2), run(5))) == [2, 5]
    finally:
        observer.uninstall()
