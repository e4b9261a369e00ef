"""A PostgreSQL backend killed under a transaction: before COMMIT the function runs again on a
fresh connection; during COMMIT the outcome is unknown and nothing is retried."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dalkit
from dalkit import (
    AsyncDatabase,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    Database,
    RetryPolicy,
)
from dalkit.transaction.options import IsolationLevel

from .models import Item, create_all, create_all_async, item_names, item_names_async

pytestmark = pytest.mark.postgres

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)
PID = sa.text("SELECT pg_backend_pid()")

# A deferred constraint trigger fires inside COMMIT: this one makes its own backend terminate
# there, the way a crash or an administrator would, after the client has sent COMMIT.
DIE_DURING_COMMIT = [
    """
    CREATE FUNCTION die_during_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5);
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER die_during_commit AFTER INSERT ON items
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.name = 'doomed')
    EXECUTE FUNCTION die_during_commit()
    """,
]


def _items_with_trigger(db: Database, statements: list[str]) -> None:
    create_all(db)
    with db.engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def _kill(admin: psycopg.Connection[tuple[object, ...]], pid: int) -> None:
    # with a timeout, pg_terminate_backend waits until the backend is gone
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_a_connection_killed_before_commit_is_retried_on_a_fresh_one(
    pg_db: Database, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    create_all(pg_db)
    pids: list[int] = []

    def add(session: Session) -> None:
        pids.append(int(session.scalar(PID) or 0))
        session.add(Item(name="landed"))
        session.flush()
        if len(pids) == 1:
            _kill(pg_admin, pids[0])
        session.execute(sa.select(1))

    pg_db.transactional(retry=FAST).run(add)
    assert len(pids) == 2
    assert pids[0] != pids[1]
    assert item_names(pg_db) == ["landed"]
    assert pg_db.pool_stats()["connections_lost"] >= 1


def test_a_connection_killed_before_commit_surfaces_when_nothing_retries(
    pg_db: Database, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    with pytest.raises(ConnectionLostError), pg_db.transaction() as session:
        _kill(pg_admin, int(session.scalar(PID) or 0))
        session.execute(sa.select(1))
    with pg_db.transaction() as session:  # the pool hands out a working connection again
        assert session.scalar(sa.select(1)) == 1


def test_a_connection_killed_during_commit_is_an_unknown_outcome_never_retried(
    pg_db: Database,
) -> None:
    _items_with_trigger(pg_db, DIE_DURING_COMMIT)
    calls: list[int] = []

    def add(session: Session) -> None:
        calls.append(1)
        session.add(Item(name="doomed"))

    with pytest.raises(CommitOutcomeUnknownError) as caught:
        pg_db.transactional(retry=FAST).run(add)
    assert calls == [1]
    assert isinstance(caught.value.__cause__, ConnectionLostError)
    stats = pg_db.transaction_stats()
    assert (stats["failed"], stats["retries"]) == (1, 0)
    assert item_names(pg_db) == []  # here it did abort, but the client could not know


async def test_async_connection_killed_before_commit_is_retried(
    pg_async_db: AsyncDatabase, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    await create_all_async(pg_async_db)
    pids: list[int] = []

    async def add(session: AsyncSession) -> None:
        pids.append(int(await session.scalar(PID) or 0))
        session.add(Item(name="landed"))
        await session.flush()
        if len(pids) == 1:
            _kill(pg_admin, pids[0])
        await session.execute(sa.select(1))

    await pg_async_db.transactional(retry=FAST).run(add)
    assert len(pids) == 2
    assert await item_names_async(pg_async_db) == ["landed"]


async def test_async_connection_killed_during_commit_is_an_unknown_outcome(
    pg_async_db: AsyncDatabase,
) -> None:
    await create_all_async(pg_async_db)
    async with pg_async_db.engine.begin() as connection:
        for statement in DIE_DURING_COMMIT:
            await connection.exec_driver_sql(statement)
    calls: list[int] = []

    async def add(session: AsyncSession) -> None:
        calls.append(1)
        session.add(Item(name="doomed"))

    with pytest.raises(CommitOutcomeUnknownError):
        await pg_async_db.transactional(retry=FAST).run(add)
    assert calls == [1]


SLOW_COMMIT = [
    """
    CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_sleep(1);
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON items
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.name = 'slow')
    EXECUTE FUNCTION slow_commit()
    """,
]


def test_a_connection_lost_during_commit_runs_no_callbacks_and_counts_as_unknown(
    pg_db: Database,
) -> None:
    _items_with_trigger(pg_db, DIE_DURING_COMMIT)
    ran: list[str] = []

    def add(session: Session) -> None:
        session.add(Item(name="doomed"))
        dalkit.on_commit(lambda: ran.append("commit"))
        dalkit.on_rollback(lambda: ran.append("rollback"))

    with pytest.raises(CommitOutcomeUnknownError):
        pg_db.run_transaction(add)
    stats = pg_db.transaction_stats()
    assert ran == []
    assert (stats["outcome_unknown"], stats["rolled_back"]) == (1, 0)


async def test_a_cancellation_during_commit_runs_no_callbacks_and_counts_as_unknown(
    pg_async_db: AsyncDatabase,
) -> None:
    await create_all_async(pg_async_db)
    async with pg_async_db.engine.begin() as connection:
        for statement in SLOW_COMMIT:
            await connection.exec_driver_sql(statement)
    ran: list[str] = []
    committing = asyncio.Event()

    async def add(session: AsyncSession) -> None:
        session.add(Item(name="slow"))
        await session.flush()
        dalkit.on_commit(lambda: ran.append("commit"))
        dalkit.on_rollback(lambda: ran.append("rollback"))
        committing.set()  # the runner's flush and COMMIT come next

    task = asyncio.create_task(pg_async_db.run_transaction(add))
    await committing.wait()
    await asyncio.sleep(0.3)  # inside the one-second COMMIT
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = pg_async_db.transaction_stats()
    assert ran == []
    assert (stats["outcome_unknown"], stats["rolled_back"]) == (1, 0)


@pytest.mark.parametrize("isolation", [None, "REPEATABLE READ"])
def test_a_read_only_transaction_whose_commit_broke_is_retried(
    pg_db: Database,
    pg_admin: psycopg.Connection[tuple[object, ...]],
    isolation: IsolationLevel | None,
) -> None:
    # the server kept it from writing: a lost COMMIT leaves nothing unknown
    pids: list[int] = []

    def read(session: Session) -> int:
        pids.append(int(session.scalar(PID) or 0))  # begins the transaction (BEGIN READ ONLY)
        if len(pids) == 1:
            _kill(pg_admin, pids[0])
        return pids[-1]

    assert pg_db.transactional(read_only=True, isolation=isolation, retry=FAST).run(read)
    assert len(pids) == 2
    with pytest.raises(ConnectionLostError):
        with pg_db.transaction(read_only=True, isolation=isolation) as session:
            _kill(pg_admin, int(session.scalar(PID) or 0))


async def test_an_async_read_only_transaction_whose_commit_broke_is_retried(
    pg_async_db: AsyncDatabase, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    pids: list[int] = []

    async def read(session: AsyncSession) -> int:
        pids.append(int(await session.scalar(PID) or 0))
        if len(pids) == 1:
            _kill(pg_admin, pids[0])
        return pids[-1]

    assert await pg_async_db.transactional(read_only=True, retry=FAST).run(read)
    assert len(pids) == 2


def test_a_connection_lost_in_a_caught_savepoint_ends_the_transaction_in_dalkit_terms(
    pg_db: Database, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    create_all(pg_db)
    for then in ("statement", "flush", "end"):
        with pytest.raises(dalkit.TransactionAbortedError) as raised:
            with pg_db.transaction() as session:
                pid = int(session.scalar(PID) or 0)
                with pytest.raises(ConnectionLostError):
                    with pg_db.transaction(propagation="nested") as inner:
                        _kill(pg_admin, pid)
                        inner.execute(sa.text("SELECT 1"))
                if then == "statement":
                    session.execute(sa.text("SELECT 2"))
                elif then == "flush":
                    session.add(Item(name="after the loss"))
                    session.flush()
        assert "connection of this transaction was lost" in str(raised.value)
        assert isinstance(raised.value.__cause__, ConnectionLostError)
    assert pg_db.pool_stats()["checked_out"] == 0


async def test_an_async_connection_lost_in_a_caught_savepoint_is_retried(
    pg_async_db: AsyncDatabase, pg_admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    pids: list[int] = []

    async def work(session: AsyncSession) -> int:
        pids.append(int(await session.scalar(PID) or 0))
        try:
            async with pg_async_db.transaction(propagation="nested") as inner:
                if len(pids) == 1:
                    _kill(pg_admin, pids[0])
                await inner.execute(sa.text("SELECT 1"))
        except ConnectionLostError:
            pass
        return int(await session.scalar(sa.text("SELECT 2")) or 0)

    assert await pg_async_db.transactional(retry=FAST).run(work) == 2
    assert len(pids) == 2
