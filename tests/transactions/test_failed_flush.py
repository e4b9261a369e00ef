"""A session used again after a failed flush rolled its transaction back raises
TransactionAbortedError (before: SQLAlchemy's raw PendingRollbackError), from the flush's own
error, on every path: a repository, the session, db.sql(), a unit of work joining it, and the
end of the block; a transaction function is retried when the flush's error is retryable. So
does one after ``session.rollback()`` inside the block that owns the transaction, whose end
then commits nothing and runs no on_commit callback (before, the block carried on in a new
transaction and committed it, running the on_commit callbacks of the work rolled back), and
transaction_stats() counts it as discarded (before: committed), as it does a unit of work's
rollback() (before: failed)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    AsyncUnitOfWork,
    Database,
    Repository,
    SerializationError,
    TransactionAbortedError,
    UniqueViolationError,
    UnitOfWork,
    on_commit,
    on_rollback,
)

from .models import Item, create_all, create_all_async, item_names, item_names_async


class Items(Repository[Item]):
    pass


class AsyncItems(AsyncRepository[Item]):
    pass


def _uses(db: Database) -> dict[str, Callable[[Session], object]]:
    def in_a_unit_of_work(session: Session) -> None:
        with UnitOfWork(db):
            pass  # pragma: no cover - refused on entry

    return {
        "repository": lambda session: Items(session).count(),
        "session": lambda session: session.execute(sa.select(Item)).all(),
        "db.sql": lambda session: db.sql("SELECT 1"),
        "unit of work": in_a_unit_of_work,
        "end of the block": lambda session: None,
    }


def test_a_sync_session_used_after_a_failed_flush_raises_transaction_aborted(
    db: Database,
) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="taken")))
    for path, use in _uses(db).items():
        with pytest.raises(TransactionAbortedError, match="UniqueViolationError") as raised:
            with db.transaction() as session:
                with pytest.raises(UniqueViolationError):
                    Items(session).add(Item(name="taken"))
                use(session)
        assert isinstance(raised.value.__cause__, UniqueViolationError), path
    assert item_names(db) == ["taken"]
    assert db.pool_stats()["checked_out"] == 0


async def test_an_async_session_used_after_a_failed_flush_raises_transaction_aborted(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    await async_db.run_transaction(_add_taken)

    async def in_a_unit_of_work(session: AsyncSession) -> None:
        async with AsyncUnitOfWork(async_db):
            pass  # pragma: no cover - refused on entry

    async def at_the_end(session: AsyncSession) -> None:
        pass

    async def by_the_session(session: AsyncSession) -> object:
        return (await session.execute(sa.select(Item))).all()

    uses: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
        "repository": lambda session: AsyncItems(session).count(),
        "session": by_the_session,
        "db.sql": lambda session: async_db.sql("SELECT 1"),
        "unit of work": in_a_unit_of_work,
        "end of the block": at_the_end,
    }
    for path, use in uses.items():
        with pytest.raises(TransactionAbortedError, match="UniqueViolationError") as raised:
            async with async_db.transaction() as session:
                with pytest.raises(UniqueViolationError):
                    await AsyncItems(session).add(Item(name="taken"))
                await use(session)
        assert isinstance(raised.value.__cause__, UniqueViolationError), path
    assert await item_names_async(async_db) == ["taken"]
    assert async_db.pool_stats()["checked_out"] == 0


async def _add_taken(session: AsyncSession) -> None:
    session.add(Item(name="taken"))


def test_a_unit_of_work_used_after_its_flush_failed_raises_transaction_aborted(
    db: Database,
) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="taken")))
    with pytest.raises(TransactionAbortedError), UnitOfWork(db) as uow:
        items = Items(uow.session)
        with pytest.raises(UniqueViolationError):
            items.add(Item(name="taken"))
        uow.commit()
    assert item_names(db) == ["taken"]
    assert db.pool_stats()["checked_out"] == 0


def test_a_function_whose_swallowed_flush_failure_is_retryable_is_retried(
    pg_db: Database,
) -> None:
    # the trigger fails the first attempt's insert as a concurrent transaction would (40001);
    # the function swallows it and reads on: the whole function must run again
    create_all(pg_db)
    pg_db.sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.name = 'conflicts' THEN RAISE EXCEPTION 'could not serialize' "
        "USING ERRCODE = 'serialization_failure'; END IF; RETURN NEW; END $$"
    )
    pg_db.sql("CREATE TRIGGER refuse BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse()")
    attempts: list[str] = []

    @pg_db.transactional(retry=3)
    def add_one(session: Session) -> int:
        name = "conflicts" if not attempts else "added"
        attempts.append(name)
        with contextlib.suppress(SerializationError):
            Items(session).add(Item(name=name))
        return Items(session).count()

    assert add_one() == 1
    assert attempts == ["conflicts", "added"]
    assert item_names(pg_db) == ["added"]


def test_a_session_rolled_back_inside_its_block_neither_goes_on_nor_runs_commit_callbacks(
    db: Database,
) -> None:
    create_all(db)
    sent: list[str] = []
    with pytest.raises(TransactionAbortedError, match=r"session.rollback\(\) inside"):
        with db.transaction() as session:
            session.add(Item(name="rolled back"))
            session.flush()
            on_commit(lambda: sent.append("about the rolled back item"))
            session.rollback()
            session.add(Item(name="after the rollback"))
            session.flush()
    undone: list[str] = []
    with db.transaction() as session:
        session.add(Item(name="rolled back"))
        session.flush()
        on_commit(lambda: sent.append("about the rolled back item"))
        on_rollback(lambda: undone.append("rolled back"))
        session.rollback()  # and nothing after it: the block ends rolled back, quietly
    assert undone == ["rolled back"]
    with pytest.raises(KeyError), db.transaction() as session:
        try:
            session.add(Item(name="rolled back"))
            raise KeyError("the caller's own error")
        except KeyError:
            session.rollback()  # SQLAlchemy's habit: the caller's error still propagates
            raise
    with UnitOfWork(db) as uow:  # a unit of work's rollback() is its own, still fine
        uow.session.add(Item(name="undone"))
        uow.rollback()
    assert sent == []
    assert item_names(db) == []
    assert db.pool_stats()["checked_out"] == 0


async def test_an_async_session_rolled_back_inside_its_block_cannot_commit(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    sent: list[str] = []

    @async_db.transactional(retry=3)
    async def add_then_roll_back(session: AsyncSession) -> None:
        session.add(Item(name="rolled back"))
        await session.flush()
        on_commit(lambda: sent.append("about the rolled back item"))
        await session.rollback()
        session.add(Item(name="after the rollback"))  # refused at the end's flush

    with pytest.raises(TransactionAbortedError, match=r"session.rollback\(\) inside"):
        await add_then_roll_back()
    assert sent == []
    assert await item_names_async(async_db) == []
    assert async_db.pool_stats()["checked_out"] == 0


def test_a_call_that_rolled_itself_back_counts_as_discarded_not_committed(db: Database) -> None:
    with db.transaction() as session:
        session.execute(sa.select(sa.literal(1)))
        session.rollback()
    db.run_transaction(lambda session: session.rollback())
    db.run_transaction(lambda session: None)
    with UnitOfWork(db) as uow:  # a unit of work's rollback(): discarded too, not failed
        uow.rollback()
    stats = db.transaction_stats()
    assert (stats["total"], stats["committed"], stats["discarded"]) == (4, 1, 3)
    assert (stats["failed"], stats["rolled_back"], stats["success_rate"]) == (0, 3, 1.0)


async def test_an_async_call_that_rolled_itself_back_counts_as_discarded(
    async_db: AsyncDatabase,
) -> None:
    async with async_db.transaction() as session:
        await session.rollback()
    async with AsyncUnitOfWork(async_db) as uow:
        await uow.rollback()
    stats = async_db.transaction_stats()
    assert (stats["committed"], stats["discarded"], stats["rolled_back"]) == (0, 2, 2)
    assert stats["failed"] == 0
