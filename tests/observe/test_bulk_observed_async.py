"""Bulk writes are observed like any statement: the repositories' COPY on PostgreSQL, which
SQLAlchemy never sees, and SQLite's executemany appear in the query statistics with their rows,
in the slow-query log (without the rows' values) and in query budgets; a COPY that fails
counts as an error of its shape. This async file is the source of ``test_bulk_observed.py``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, AsyncRepository, BulkLoadError
from dalkit.observe import install


class Base(DeclarativeBase):
    pass


class Reading(Base):
    __tablename__ = "observed_readings"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret_note: Mapped[str]


class Readings(AsyncRepository[Reading]):
    model = Reading


ROWS = 300


def _bulk_writes(stats: list[dict[str, Any]], operation: str) -> list[dict[str, Any]]:
    table = "observed_readings"
    return [s for s in stats if s["operation"] == operation and table in s["statement"]]


async def test_bulk_writes_appear_in_stats_slow_log_and_budgets(
    async_db: AsyncDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    await async_db.create_all(Base.metadata)
    observer = install(async_db.engine, {"slow_query_ms": 0})
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    rows = [{"id": n, "secret_note": f"hunter{n}"} for n in range(1, ROWS + 1)]
    try:
        with observer.query_budget(max_queries=10_000) as budget:
            async with async_db.transaction() as session:
                await Readings(session).bulk_insert(rows)
                for _ in range(2):
                    await Readings(session).bulk_update([{"id": 1, "secret_note": "changed"}])
        stats = observer.query_stats(top=None)
    finally:
        observer.uninstall()
    on_postgres = async_db.engine.dialect.name == "postgresql"
    operation = "COPY" if on_postgres else "INSERT"
    (load,) = _bulk_writes(stats, operation)
    assert load["count"] == 1
    assert load["rows"] == ROWS
    if on_postgres:
        # bulk_update copies into a staging table, then updates from it: one shape each, the
        # table named after the columns (random names would add shapes at every call)
        staged = [s for s in stats if s["operation"] == "COPY" and s is not load]
        assert [(s["count"], s["rows"]) for s in staged] == [(2, 2)]
        assert len([s for s in stats if s["statement"].startswith("UPDATE observed")]) == 1
        assert any("COPY" in sql for sql, _ in budget.statements)
    logged = [r.getMessage() for r in caplog.records if load["statement"][:30] in r.getMessage()]
    assert logged
    assert f"rows {ROWS}" in logged[0]
    assert not any("hunter" in r.getMessage() for r in caplog.records)
    assert sum(load["statement"][:30] in sql for sql, _ in budget.statements) == 1


async def test_a_failed_bulk_load_is_counted_as_an_error_not_a_run(
    async_db: AsyncDatabase,
) -> None:
    await async_db.create_all(Base.metadata)
    async with async_db.transaction() as session:
        await Readings(session).bulk_insert([{"id": 1, "secret_note": "first"}])
    observer = install(async_db.engine)
    observer.pop_query_stats(top=None)  # the database observes from the start: forget the load
    try:
        with pytest.raises(BulkLoadError):
            async with async_db.transaction() as session:
                await Readings(session).bulk_insert([{"id": 1, "secret_note": "clash"}])
        stats = observer.query_stats(top=None)
    finally:
        observer.uninstall()
    # the failed chunk and its bisection ran no successful write of the table: each failed
    operation = "COPY" if async_db.engine.dialect.name == "postgresql" else "INSERT"
    (load,) = _bulk_writes(stats, operation)
    assert load["count"] == 0
    assert load["error_classes"] == {"UniqueViolationError": load["errors"]}
    assert load["errors"] >= 1
