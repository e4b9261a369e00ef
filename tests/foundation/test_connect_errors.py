"""A server that cannot be reached raises ConnectionFailedError and counts connections_errors,
on every driver; driver messages read as the driver's words, without its class name."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from dalkit import (
    AsyncDatabase,
    ConnectionFailedError,
    Database,
    IntegrityError,
    UniqueViolationError,
)

from .models import Account, Base

UNREACHABLE = {
    # nothing listens on port 1 of loopback: refused at once
    "refused port": "postgresql://app:pw@127.0.0.1:1/app",
    # .invalid never resolves (RFC 2606)
    "unknown host": "postgresql://app:pw@no-such-host.invalid/app",
}


@pytest.mark.parametrize("case", sorted(UNREACHABLE))
async def test_asyncpg_raises_connection_failed_and_counts_it(case: str) -> None:
    async with AsyncDatabase(UNREACHABLE[case], connect_timeout_s=2) as db:
        with pytest.raises(ConnectionFailedError, match="could not connect") as caught:
            async with db.connection():
                pass
        stats = db.pool_stats()
    assert isinstance(caught.value.__cause__, OSError)
    assert stats["connections_errors"] == 1
    assert stats["requests_num"] == 1
    assert stats["checked_out"] == 0


@pytest.mark.parametrize("case", sorted(UNREACHABLE))
def test_psycopg_raises_the_same_error_and_counts_it(case: str) -> None:
    with Database(UNREACHABLE[case], connect_timeout_s=2) as db:
        with pytest.raises(ConnectionFailedError), db.connection():
            pass
        assert db.pool_stats()["connections_errors"] == 1


async def test_an_unreachable_async_server_is_an_unhealthy_connection_failure() -> None:
    async with AsyncDatabase(UNREACHABLE["refused port"]) as db:
        result = await db.health_check()
    assert not result.ok
    assert (result.error or "").startswith("ConnectionFailedError: could not connect")


def test_a_unique_violation_reads_as_the_drivers_words(db: Database, db_backend: str) -> None:
    Base.metadata.create_all(db.engine)
    with db.session() as session:
        session.add(Account(email="a@example.com"))
    with pytest.raises(UniqueViolationError) as caught, db.session() as session:
        session.add(Account(email="a@example.com"))
    message = str(caught.value)
    assert not message.startswith(("IntegrityError", "UniqueViolation", "<class"))
    expected = "duplicate key value" if db_backend == "postgres" else "UNIQUE constraint failed"
    assert message.startswith(expected)


async def test_async_driver_messages_carry_no_class_prefix(async_db: AsyncDatabase) -> None:
    async with async_db.connection() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(sa.insert(Account).values(email="a@example.com"))
    with pytest.raises(IntegrityError) as caught:
        async with async_db.connection() as connection:
            await connection.execute(sa.insert(Account).values(email="a@example.com"))
    message = str(caught.value)
    assert not message.startswith(("IntegrityError", "UniqueViolation", "<class"))
    assert "duplicate key value" in message or "UNIQUE constraint failed" in message


def test_a_sqlite_file_that_cannot_be_opened_fails_as_in_sync_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/no-such-dir/app.db"
    with Database(url) as db, pytest.raises(ConnectionFailedError) as sync_error:
        db.sql("SELECT 1")
    died: list[threading.ExceptHookArgs] = []
    before = set(threading.enumerate())

    async def fail() -> set[threading.Thread]:
        db = AsyncDatabase(url)
        try:
            with pytest.raises(ConnectionFailedError) as caught:
                await db.sql("SELECT 1")
            assert str(caught.value) == str(sync_error.value)
            return set(threading.enumerate()) - before
        finally:
            await db.dispose()

    hook, threading.excepthook = threading.excepthook, died.append
    try:
        # the loop closes as soon as the error ends it: aiosqlite's worker thread, still
        # stopping, then died printing "Event loop is closed" (about every other time)
        left = [asyncio.run(fail()) for _ in range(10)]
        for thread in set().union(*left):
            thread.join(5)
    finally:
        threading.excepthook = hook
    assert left == [set()] * 10  # its worker thread had ended when the error was raised
    assert died == []


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_a_sqlite_file_that_cannot_be_opened_is_named_with_what_to_do(
    tmp_path: Path, where: str
) -> None:
    # SQLite says only "unable to open database file": a new user pointing at a data/ folder
    # not made yet learned neither which file nor why
    path = tmp_path / "data" / "app.db" if where == "missing directory" else tmp_path
    with Database(f"sqlite:///{path}") as db, pytest.raises(ConnectionFailedError) as caught:
        db.sql("SELECT 1")
    message = str(caught.value)
    assert str(path) in message
    if where == "missing directory":
        assert f"its directory {tmp_path / 'data'} does not exist" in message
        assert "create the directory first" in message
    else:
        assert "it is a directory" in message

    async def fail() -> str:
        async with AsyncDatabase(f"sqlite+aiosqlite:///{path}") as adb:
            with pytest.raises(ConnectionFailedError) as async_caught:
                await adb.sql("SELECT 1")
        return str(async_caught.value)

    assert asyncio.run(fail()) == message
