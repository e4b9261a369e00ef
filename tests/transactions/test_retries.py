"""Retries against real failures: a serialization failure and a deadlock on PostgreSQL, a locked
SQLite file; exhaustion; what is never retried; only the outermost level retries."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    Database,
    DeadlockError,
    RetryExhaustedError,
    RetryPolicy,
    SerializationError,
    UniqueViolationError,
    on_commit,
    on_rollback,
)

from .models import Counter, Item, create_all, create_all_async, item_names

FAST = RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.01)
BUMP = sa.update(Counter).where(Counter.id == 1).values(value=Counter.value + 100)


@pytest.fixture
def counter_db(pg_db: Database) -> Database:
    create_all(pg_db)
    with pg_db.transaction() as session:
        session.add(Counter(id=1, value=0))
    pg_db.transaction_stats(reset=True)
    return pg_db


def _read_then_lose_the_race(db: Database, session: Session) -> int:
    """Read the counter, let another transaction change it, then write: at REPEATABLE READ
    the write fails with SQLSTATE 40001."""
    value = session.scalar(sa.select(Counter.value).where(Counter.id == 1))
    assert value is not None
    with db.engine.begin() as other:
        other.execute(BUMP)
    session.execute(sa.update(Counter).where(Counter.id == 1).values(value=value + 1))
    return value


def _counter(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(sa.select(Counter.value)) or 0)


@pytest.mark.postgres
def test_a_serialization_failure_reruns_the_whole_function(counter_db: Database) -> None:
    calls: list[int] = []
    ran: list[str] = []

    def increment(session: Session) -> int:
        calls.append(len(calls) + 1)
        on_commit(lambda: ran.append(f"commit {len(calls)}"))
        on_rollback(lambda: ran.append(f"rollback {len(calls)}"))
        if len(calls) == 1:
            return _read_then_lose_the_race(counter_db, session)
        value = int(session.scalar(sa.select(Counter.value)) or 0)
        session.execute(sa.update(Counter).values(value=value + 1))
        return value

    assert counter_db.transactional(isolation="REPEATABLE READ", retry=FAST).run(increment) == 100
    assert calls == [1, 2]
    stats = counter_db.transaction_stats()
    assert (stats["committed"], stats["retries"], stats["rolled_back"]) == (1, 1, 1)
    assert _counter(counter_db) == 101  # the retry read the other transaction's update
    assert ran == ["rollback 1", "commit 2"]  # the failed attempt's on_commit was dropped


@pytest.mark.postgres
def test_retries_run_out_into_retry_exhausted_error_with_the_last_error(
    counter_db: Database,
) -> None:
    calls: list[int] = []

    def always_loses(session: Session) -> int:
        calls.append(1)
        return _read_then_lose_the_race(counter_db, session)

    with pytest.raises(RetryExhaustedError) as caught:
        counter_db.transactional(isolation="REPEATABLE READ", retry=FAST).run(always_loses)
    assert caught.value.attempts == 5
    assert len(calls) == 5
    assert isinstance(caught.value.__cause__, SerializationError)
    assert caught.value.__cause__.sqlstate == "40001"
    stats = counter_db.transaction_stats()
    assert (stats["failed"], stats["retries"], stats["rolled_back"]) == (1, 4, 5)


@pytest.mark.postgres
def test_without_a_retry_policy_the_serialization_failure_surfaces_as_itself(
    counter_db: Database,
) -> None:
    with pytest.raises(SerializationError):
        counter_db.transactional(isolation="REPEATABLE READ", retry=None).run(
            lambda session: _read_then_lose_the_race(counter_db, session)
        )


@pytest.mark.postgres
def test_a_with_block_never_retries(counter_db: Database) -> None:
    with (
        pytest.raises(SerializationError),
        counter_db.transaction(isolation="REPEATABLE READ") as session,
    ):
        _read_then_lose_the_race(counter_db, session)


@pytest.mark.postgres
def test_only_the_outermost_level_retries(counter_db: Database) -> None:
    inner_calls: list[int] = []
    outer_calls: list[int] = []

    @counter_db.transactional(retry=FAST)
    def inner(session: Session) -> None:
        inner_calls.append(1)
        if len(inner_calls) == 1:
            _read_then_lose_the_race(counter_db, session)

    @counter_db.transactional(isolation="REPEATABLE READ", retry=FAST)
    def outer(session: Session) -> None:
        outer_calls.append(1)
        inner()

    outer()
    assert (len(outer_calls), len(inner_calls)) == (2, 2)


@pytest.mark.postgres
def test_a_deadlock_is_broken_and_the_victim_reruns(
    counter_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dalkit.transaction")
    with counter_db.transaction() as session:
        session.add(Counter(id=2, value=0))
    counter_db.transaction_stats(reset=True)
    both_hold_one = threading.Barrier(2, timeout=10)
    calls: dict[str, int] = {"a": 0, "b": 0}

    def lock_both(name: str, first: int, second: int, session: Session) -> None:
        calls[name] += 1
        session.execute(sa.update(Counter).where(Counter.id == first).values(value=1))
        if calls[name] == 1:
            both_hold_one.wait()
        session.execute(sa.update(Counter).where(Counter.id == second).values(value=2))

    errors: list[BaseException] = []

    def worker(name: str, first: int, second: int) -> None:
        try:
            counter_db.transactional(retry=FAST).run(lock_both, name, first, second)  # type: ignore[call-overload]
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("a", 1, 2)),
        threading.Thread(target=worker, args=("b", 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(calls.values()) == [1, 2]  # one victim, run again
    assert counter_db.transaction_stats()["retries"] == 1
    assert f"after {DeadlockError.__name__}" in caplog.text


def test_a_non_retryable_error_is_raised_at_once(db: Database) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="taken")))
    calls: list[int] = []

    def duplicate(session: Session) -> None:
        calls.append(1)
        session.add(Item(name="taken"))

    with pytest.raises(UniqueViolationError):
        db.transactional(retry=FAST).run(duplicate)
    assert calls == [1]


def test_a_bug_in_the_function_is_not_retried(db: Database) -> None:
    calls: list[int] = []

    def buggy() -> None:
        calls.append(1)
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        db.run_transaction(buggy)
    assert calls == [1]


# --- SQLite: a writer that finds the file locked waits, then is retried -------------------------


@pytest.fixture
def impatient_sqlite(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url, sqlite_busy_timeout_ms=50)
    create_all(database)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def lock_holder(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection holding the write lock until the test releases it."""
    connection = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    finally:
        if connection.in_transaction:
            connection.rollback()
        connection.close()


def test_a_locked_sqlite_database_is_retried_once_the_lock_is_free(
    impatient_sqlite: Database, lock_holder: sqlite3.Connection
) -> None:
    calls: list[int] = []

    def add(session: Session) -> None:
        calls.append(1)
        on_rollback(lock_holder.rollback)  # the other writer finishes while this one backs off
        session.add(Item(name="landed"))
        session.flush()

    impatient_sqlite.transactional(retry=FAST).run(add)
    assert len(calls) == 2
    assert item_names(impatient_sqlite) == ["landed"]


def test_a_sqlite_lock_that_outlasts_the_retries_is_reported_as_exhausted(
    impatient_sqlite: Database, lock_holder: sqlite3.Connection
) -> None:
    with pytest.raises(RetryExhaustedError) as caught:
        impatient_sqlite.transactional(retry=RetryPolicy(2, 0.001, 0.001)).run(
            lambda session: session.execute(sa.select(1))
        )
    assert caught.value.attempts == 2
    assert "database is locked" in str(caught.value.__cause__)


# --- the async API ----------------------------------------------------------------------------


@pytest.mark.postgres
async def test_async_serialization_failure_reruns_the_whole_function(
    pg_async_db: AsyncDatabase,
) -> None:
    await create_all_async(pg_async_db)
    async with pg_async_db.transaction() as session:
        session.add(Counter(id=1, value=0))
    calls: list[int] = []

    async def increment(session: AsyncSession) -> None:
        calls.append(1)
        value = int(await session.scalar(sa.select(Counter.value)) or 0)
        if len(calls) == 1:
            async with pg_async_db.engine.begin() as other:
                await other.execute(BUMP)
        await session.execute(sa.update(Counter).values(value=value + 1))

    await pg_async_db.transactional(isolation="SERIALIZABLE", retry=FAST).run(increment)
    assert len(calls) == 2
    async with pg_async_db.session() as session:
        assert await session.scalar(sa.select(Counter.value)) == 101


async def test_async_locked_sqlite_is_retried(
    sqlite_url: str, lock_holder: sqlite3.Connection
) -> None:
    db = AsyncDatabase(
        make_url(sqlite_url).set(drivername="sqlite+aiosqlite"), sqlite_busy_timeout_ms=50
    )
    try:
        calls: list[int] = []

        async def read(session: AsyncSession) -> int:
            calls.append(1)
            on_rollback(lock_holder.rollback)
            return int(await session.scalar(sa.select(sa.literal(7))) or 0)

        assert await db.transactional(retry=FAST).run(read) == 7
        assert len(calls) == 2
    finally:
        await db.dispose()
