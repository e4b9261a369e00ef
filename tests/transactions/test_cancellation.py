"""A cancelled async transaction rolls back, gives its connection back and is not retried."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit import AsyncDatabase, on_commit, on_rollback

from .models import Item, create_all_async, item_names_async


async def test_a_cancelled_transaction_rolls_back_returns_its_connection_and_is_not_retried(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    inside = asyncio.Event()
    calls: list[int] = []
    ran: list[str] = []

    async def slow(session: AsyncSession) -> None:
        calls.append(1)
        on_commit(lambda: ran.append("commit"))
        on_rollback(lambda: ran.append("rollback"))
        session.add(Item(name="cancelled"))
        await session.flush()
        inside.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(async_db.transactional(retry=5).run(slow))
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert ran == ["rollback"]
    assert async_db.pool_stats()["checked_out"] == 0
    assert await item_names_async(async_db) == []
    stats = async_db.transaction_stats()
    assert (stats["failed"], stats["retries"], stats["rolled_back"]) == (1, 0, 1)


@pytest.mark.postgres
async def test_a_query_cancelled_mid_flight_leaves_a_usable_pool(
    pg_async_db: AsyncDatabase,
) -> None:
    await create_all_async(pg_async_db)
    calls: list[int] = []

    async def stuck(session: AsyncSession) -> None:
        calls.append(1)
        session.add(Item(name="cancelled"))
        await session.execute(sa.text("SELECT pg_sleep(30)"))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await pg_async_db.transactional(retry=5).run(stuck)
    assert calls == [1]
    assert pg_async_db.pool_stats()["checked_out"] == 0
    assert await item_names_async(pg_async_db) == []

    # SQLAlchemy closes a connection interrupted mid-query rather than reuse it: the next
    # transaction gets a working one
    assert await pg_async_db.run_transaction(lambda session: session.scalar(sa.select(1))) == 1


async def test_a_cancelled_with_block_rolls_back(async_db: AsyncDatabase) -> None:
    await create_all_async(async_db)
    inside = asyncio.Event()

    async def block() -> None:
        async with async_db.transaction() as session:
            session.add(Item(name="cancelled"))
            await session.flush()
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(block())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert async_db.pool_stats()["checked_out"] == 0
    assert await item_names_async(async_db) == []


async def test_a_read_only_transaction_cancelled_during_commit_rolled_back_no_unknown_outcome(
    async_db: AsyncDatabase,
) -> None:
    ran: list[str] = []

    async def read(session: AsyncSession) -> None:
        on_rollback(lambda: ran.append("rollback"))
        await session.execute(sa.select(1))

    def cancel(connection: sa.Connection) -> None:  # the COMMIT is the task's next await
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    # REPEATABLE READ: on PostgreSQL a read-only READ COMMITTED transaction sends no COMMIT
    reader = async_db.transactional(read_only=True, isolation="REPEATABLE READ")
    event.listen(async_db.engine.sync_engine, "commit", cancel)
    try:
        task = asyncio.create_task(reader.run(read))
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
    finally:
        event.remove(async_db.engine.sync_engine, "commit", cancel)
    # the server kept it from writing: its outcome is known, as for a lost connection
    assert getattr(raised.value, "__notes__", []) == []
    assert ran == ["rollback"]
    stats = async_db.transaction_stats()
    assert (stats["failed"], stats["rolled_back"], stats["outcome_unknown"]) == (1, 1, 0)
    assert async_db.pool_stats()["checked_out"] == 0


async def test_a_cancelled_aiosqlite_statement_is_interrupted_not_run_to_its_end(
    tmp_path: Path,
) -> None:
    db = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'long.db'}")
    rows: list[int] = []

    @event.listens_for(db.engine.sync_engine, "connect")
    def count_rows(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("counted", 1, rows.append)

    total = 1_000_000
    long = sa.text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) "
        "SELECT count(counted(x)) FROM c"
    )
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await db.run_transaction(lambda session: session.scalar(long, {"n": total}))
        # the connection's close no longer waits for the statement to count every row
        assert len(rows) < total
        assert db.pool_stats()["checked_out"] == 0
        # and its transaction is over: the write lock is free at once, not at the next gc
        with closing(sqlite3.connect(tmp_path / "long.db", timeout=0)) as other:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
    finally:
        await db.dispose()
