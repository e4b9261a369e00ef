"""The pytest plugin's bound query counters and per-test rollback fixtures, on both backends."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
import sqlalchemy as sa
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, AsyncRepository, Database, Repository
from dalkit.testing import QueryCounter

from .models import Account, Base

Counting = Callable[..., AbstractContextManager[QueryCounter]]


@pytest.fixture(scope="session")
def dalkit_metadata() -> MetaData:
    # the plugin creates these tables once per backend for the rollback fixtures
    return Base.metadata


# --- count_queries / assert_max_queries as fixtures -----------------------------------------


def test_count_queries_fixture_counts_the_tests_db(db: Database, count_queries: Counting) -> None:
    with count_queries() as queries, db.connection() as connection:
        connection.exec_driver_sql("SELECT 1")
        connection.exec_driver_sql("SELECT 2")
    assert queries.count == 2


async def test_count_queries_fixture_counts_the_tests_async_db(
    async_db: AsyncDatabase, count_queries: Counting
) -> None:
    with count_queries() as queries:
        async with async_db.connection() as connection:
            await connection.exec_driver_sql("SELECT 1")
    assert queries.count == 1


def test_count_queries_fixture_takes_another_target(
    count_queries: Counting, sqlite_url: str
) -> None:
    with Database(sqlite_url) as other, count_queries(other) as queries:
        with other.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
    assert queries.count == 1


def test_assert_max_queries_fixture_fails_over_the_limit(
    db: Database, assert_max_queries: Counting
) -> None:
    with pytest.raises(AssertionError, match="expected at most 1 queries, 2 ran") as caught:
        with assert_max_queries(1), db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
            connection.exec_driver_sql("SELECT 'tok_4f9a8c' AS token")
    # the statements are listed, a literal (maybe a secret) masked as everywhere dalkit shows SQL
    assert "2. SELECT '***' AS token" in str(caught.value)
    with assert_max_queries(2) as queries, db.connection() as connection:
        connection.exec_driver_sql("SELECT 1")
    assert queries.count == 1


class Accounts(Repository[Account]):
    pass


class AsyncAccounts(AsyncRepository[Account]):
    pass


def _loads(queries: QueryCounter) -> list[str]:
    # the load itself: COPY on PostgreSQL, an executemany INSERT on SQLite
    return [sql for sql in queries.statements if sql.startswith(("COPY", "INSERT"))]


def test_count_queries_counts_a_bulk_load_on_every_backend(
    db: Database, count_queries: Counting
) -> None:
    db.create_all(Base.metadata)
    with count_queries() as queries, db.transaction() as session:
        Accounts(session).bulk_insert([{"email": f"{i}@example.com"} for i in range(3)])
    assert len(_loads(queries)) == 1, queries.statements


async def test_count_queries_counts_an_async_bulk_load_on_every_backend(
    async_db: AsyncDatabase, count_queries: Counting
) -> None:
    await async_db.create_all(Base.metadata)
    with count_queries() as queries:
        async with async_db.transaction() as session:
            await AsyncAccounts(session).bulk_insert([{"email": "a@example.com"}])
    assert len(_loads(queries)) == 1, queries.statements


# --- db_rollback / async_db_rollback --------------------------------------------------------


def _count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Account)) or 0


@pytest.mark.parametrize("email", ["first@example.com", "second@example.com"])
def test_each_test_sees_only_its_own_committed_rows(db_rollback: Session, email: str) -> None:
    # the tables already exist; the other run of this test committed a row that is gone now
    assert _count(db_rollback) == 0
    db_rollback.add(Account(email=email, balance=1))
    db_rollback.commit()
    assert _count(db_rollback) == 1


def test_commit_and_rollback_inside_the_test_work_on_savepoints(db_rollback: Session) -> None:
    db_rollback.add(Account(email="kept@example.com"))
    db_rollback.commit()
    db_rollback.add(Account(email="dropped@example.com"))
    db_rollback.flush()
    db_rollback.rollback()
    assert db_rollback.scalars(sa.select(Account.email)).all() == ["kept@example.com"]
    with db_rollback.begin_nested():
        db_rollback.add(Account(email="nested@example.com"))
    assert _count(db_rollback) == 2


def test_rows_of_the_rollback_session_are_invisible_to_other_connections(
    db_rollback: Session,
) -> None:
    db_rollback.add(Account(email="private@example.com"))
    db_rollback.commit()
    engine = db_rollback.get_bind().engine
    with engine.connect() as other:
        seen = other.execute(sa.select(sa.func.count()).select_from(Account)).scalar()
    assert seen == 0


async def _async_count(session: AsyncSession) -> int:
    return (await session.scalar(sa.select(sa.func.count()).select_from(Account))) or 0


@pytest.mark.parametrize("email", ["first@example.com", "second@example.com"])
async def test_each_async_test_sees_only_its_own_rows(
    async_db_rollback: AsyncSession, email: str
) -> None:
    assert await _async_count(async_db_rollback) == 0
    async_db_rollback.add(Account(email=email))
    await async_db_rollback.commit()
    async_db_rollback.add(Account(email="rolled-back@example.com"))
    await async_db_rollback.flush()
    await async_db_rollback.rollback()
    assert await _async_count(async_db_rollback) == 1


def test_count_queries_fixture_counts_the_rollback_session(
    db_rollback: Session, assert_max_queries: Counting, count_queries: Counting
) -> None:
    # no `db` here: the counters follow the rollback session's database, not a fresh one (the
    # session's first statement comes after the SAVEPOINT it begins with)
    with count_queries() as queries:
        _count(db_rollback)
    assert [sql for sql in queries.statements if "accounts" in sql] == [
        "SELECT count(*) AS count_1 \nFROM accounts"
    ]
    with pytest.raises(AssertionError, match="expected at most 1 queries, 2 ran"):
        with assert_max_queries(1):
            _count(db_rollback)
            db_rollback.scalars(sa.select(Account.email)).all()


async def test_count_queries_fixture_counts_the_async_rollback_session(
    async_db_rollback: AsyncSession, assert_max_queries: Counting
) -> None:
    await _async_count(async_db_rollback)  # the session's SAVEPOINT
    with pytest.raises(AssertionError, match="expected at most 1 queries, 2 ran"):
        with assert_max_queries(1):
            await _async_count(async_db_rollback)
            await _async_count(async_db_rollback)
