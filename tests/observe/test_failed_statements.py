"""Statements that raise are observed: counted per shape and error class in the query statistics
and in ``dalkit_query_errors_total``, and logged when they were slow (a statement_timeout), on
every path (ORM, Core, raw SQL, sync and async, SQLite, psycopg and asyncpg); the error's
message, which quotes values, reaches no label and no log."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from dalkit import AsyncDatabase, Database, DatabaseError, UniqueViolationError
from dalkit.driver_errors import error_class
from dalkit.observe import Observer, install
from dalkit.observe.prometheus import register

from .conftest import PostgresDatabases
from .models import Author

NAME = "Taken Name"
INSERT = sa.insert(Author).values(id=1, name=sa.bindparam("name"))
RAW_INSERT = "INSERT INTO obs_authors (id, name) VALUES (1, '" + NAME + "')"


def _errors(observer: Observer, operation: str) -> dict[str, dict[str, int]]:
    return {
        s["statement"]: s["error_classes"]
        for s in observer.query_stats(None)
        if s["operation"] == operation and s["errors"]
    }


def _check(observer: Observer, registry: CollectorRegistry) -> None:
    """Each failure once per path, under its class; the taken value nowhere."""
    inserts = _errors(observer, "INSERT")
    assert sum(c.get("UniqueViolationError", 0) for c in inserts.values()) == 3, inserts
    assert {"SELEC ?": {"DatabaseError": 1}}.items() <= _errors(observer, "OTHER").items()
    ok = [s for s in observer.query_stats(None) if s["count"] and not s["errors"]]
    assert ok, "successful statements are still counted"
    text = generate_latest(registry).decode()
    assert (
        'dalkit_query_errors_total{database="main",error="UniqueViolationError",'
        'operation="INSERT"} 3.0' in text
    )
    assert 'error="DatabaseError",operation="OTHER"} 1.0' in text
    assert NAME not in text
    assert "already exists" not in text


def test_failed_statements_are_counted_on_every_path(seeded_db: Database) -> None:
    db = seeded_db
    registry = CollectorRegistry()
    register(db, "main", registry=registry)
    observer = install(db.engine)
    failing: list[Any] = [
        lambda s: s.add(Author(id=1, name=NAME)),  # ORM flush
        lambda s: s.execute(INSERT, {"name": NAME}),  # Core
        lambda s: s.connection().exec_driver_sql(RAW_INSERT),  # raw SQL
        lambda s: s.connection().exec_driver_sql("SELEC 1"),
    ]
    try:
        for fail in failing:
            with pytest.raises(DatabaseError), db.transaction() as session:
                fail(session)
        _check(observer, registry)
    finally:
        observer.uninstall()


async def test_failed_statements_are_counted_on_every_path_async(
    seeded_async_db: AsyncDatabase,
) -> None:
    async_db = seeded_async_db
    registry = CollectorRegistry()
    register(async_db, "main", registry=registry)
    observer = install(async_db.engine)

    async def raw(session: Any, sql: str) -> None:
        await (await session.connection()).exec_driver_sql(sql)

    failing: list[Any] = [
        lambda s: s.add(Author(id=1, name=NAME)),
        lambda s: s.execute(INSERT, {"name": NAME}),
        lambda s: raw(s, RAW_INSERT),
        lambda s: raw(s, "SELEC 1"),
    ]
    try:
        for fail in failing:
            with pytest.raises(DatabaseError):
                async with async_db.transaction() as session:
                    pending = fail(session)
                    if pending is not None:
                        await pending
        _check(observer, registry)
    finally:
        observer.uninstall()


def _timed_out(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if "pg_sleep" in r.getMessage()]


def _check_timeout(observer: Observer, caplog: pytest.LogCaptureFixture) -> None:
    (record,) = _timed_out(caplog.records)
    assert "failed: StatementTimeoutError" in record.getMessage()
    assert record.error == "StatementTimeoutError"  # type: ignore[attr-defined]
    assert record.duration_ms >= 50  # type: ignore[attr-defined]
    assert "canceling statement" not in record.getMessage()  # the driver's message is not kept
    (stat,) = [s for s in observer.query_stats(None) if "pg_sleep" in s["statement"]]
    assert (stat["count"], stat["error_classes"]) == (0, {"StatementTimeoutError": 1})


@pytest.mark.postgres
async def test_a_slow_statement_that_timed_out_is_logged_as_slow(
    pg_databases: PostgresDatabases, caplog: pytest.LogCaptureFixture
) -> None:
    db = pg_databases(statement_timeout_ms=100)
    observer = install(db.engine, {"slow_query_ms": 50})
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    try:
        with pytest.raises(DatabaseError):
            ran = db.sql("SELECT pg_sleep(2)")
            if inspect.isawaitable(ran):
                await ran
        _check_timeout(observer, caplog)
    finally:
        observer.uninstall()


class _AppError(UniqueViolationError):
    """An application's own subclass: labelled as the dalkit class it extends."""


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (asyncio.CancelledError(), "Cancelled"),
        (ValueError("Key (email)=(x@y) already exists"), "OtherError"),
        (OverflowError("Python int too large"), "DatabaseError"),
        (DatabaseError("duplicate key (email)=(x@y)"), "DatabaseError"),
        (_AppError("Key (email)=(x@y) already exists"), "UniqueViolationError"),
        # asyncpg's own errors, which a COPY raises: a SQLSTATE, no PEP 249 class
        (asyncpg.exceptions.UndefinedTableError('relation "t" does not exist'), "DatabaseError"),
        (asyncpg.exceptions.ExclusionViolationError("conflicting key"), "IntegrityError"),
    ],
)
def test_an_error_is_labelled_by_its_class_never_its_message(
    error: BaseException, label: str
) -> None:
    assert error_class(error) == label
