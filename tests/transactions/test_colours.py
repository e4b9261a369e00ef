"""The transaction API of the other colour is refused with a TransactionUsageError that says
what to do, leaving nothing open: a plain ``with`` on an AsyncDatabase's transaction (or unit
of work, or the database itself), ``async with`` on a Database's, a plain function given to an
AsyncDatabase, a coroutine function (or a callable returning a coroutine, joined or not) given
to a Database."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, AsyncUnitOfWork, Database, TransactionUsageError, UnitOfWork

from .models import Item, create_all, create_all_async, item_names, item_names_async


async def test_a_plain_with_on_an_async_transaction_is_refused_opening_nothing(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    for block in (async_db.transaction(), async_db.session()):
        with pytest.raises(
            TransactionUsageError, match=r"AsyncDatabase.transaction.*use 'async with'"
        ):
            with block:  # type: ignore[attr-defined]
                pass  # pragma: no cover - never entered
    for other in (async_db, AsyncUnitOfWork(async_db)):
        with pytest.raises(TransactionUsageError, match=f"{type(other).__name__} is an async"):
            with other:  # type: ignore[union-attr]
                pass  # pragma: no cover - never entered
    assert async_db.pool_stats()["checked_out"] == 0
    block = async_db.transaction()
    async with block as session:  # the block is still usable as it should be
        session.add(Item(name="kept"))
    assert await item_names_async(async_db) == ["kept"]


async def test_async_with_on_a_sync_transaction_is_refused_opening_nothing(db: Database) -> None:
    for block in (db.transaction(), db.session()):
        with pytest.raises(TransactionUsageError, match=r"Database.transaction.*use 'with'"):
            async with block:  # type: ignore[attr-defined]
                pass  # pragma: no cover - never entered
    for other in (db, UnitOfWork(db)):
        with pytest.raises(TransactionUsageError, match=f"{type(other).__name__} is a sync"):
            async with other:  # type: ignore[union-attr]
                pass  # pragma: no cover - never entered
    assert db.pool_stats()["checked_out"] == 0


async def test_a_plain_function_given_to_an_async_transaction_is_refused_and_rolled_back(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    def add(session: AsyncSession) -> None:
        session.add(Item(name="from a plain def"))

    plain: Any = add  # a type checker refuses it; this is what an untyped caller gets
    calls: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: async_db.run_transaction(plain),
        lambda: async_db.transactional(plain)(),
        lambda: async_db.transactional(retry=3).run(plain),
    )
    for call in calls:
        with pytest.raises(TransactionUsageError, match=r"add returned NoneType.*async def"):
            await call()
    with pytest.raises(TransactionUsageError, match="not an awaitable"):
        async with async_db.transaction():  # joined: refused there too
            await async_db.run_transaction(plain)
    assert await item_names_async(async_db) == []
    assert async_db.pool_stats()["checked_out"] == 0
    assert async_db.transaction_stats()["failed"] == 4


def test_a_coroutine_returned_to_a_joined_sync_transaction_is_refused_not_dropped(
    db: Database,
) -> None:
    # before, a call joined to a running transaction handed the coroutine back unawaited: the
    # transaction committed without its work, and Python warned at garbage collection
    create_all(db)

    class Writer:
        async def __call__(self, session: Session) -> None:
            session.add(Item(name="never awaited"))

    async def coroutine(session: Session) -> None:
        session.add(Item(name="never awaited"))

    writer: Any = Writer()  # typed, either is refused by a type checker
    coroutine_function: Any = coroutine
    with pytest.raises(TransactionUsageError, match="returned a coroutine"), db.transaction():
        db.run_transaction(writer)
    with pytest.raises(TransactionUsageError, match="coroutine function"), db.transaction():
        db.run_transaction(coroutine_function)
    gc.collect()  # an unawaited coroutine would warn here (warnings are errors)
    assert item_names(db) == []
    assert db.pool_stats()["checked_out"] == 0


async def test_a_block_entered_again_before_it_exits_is_refused(async_db: AsyncDatabase) -> None:
    # one block, one transaction at a time: shared between tasks, a second entry would have
    # ended the first one's transaction at its own exit
    await create_all_async(async_db)
    block = async_db.transaction()
    async with block as session:
        with pytest.raises(TransactionUsageError, match="already entered"):
            async with block:
                pass  # pragma: no cover - never entered
        session.add(Item(name="kept"))
    assert await item_names_async(async_db) == ["kept"]
    assert async_db.pool_stats()["checked_out"] == 0


async def test_the_connections_of_the_other_colour_are_refused_opening_nothing(
    db: Database, async_db: AsyncDatabase
) -> None:
    # before, Python's own TypeError ("does not support the context manager protocol")
    for name in ("connection", "driver_connection"):
        with pytest.raises(TransactionUsageError, match=rf"AsyncDatabase.{name}\(\).*'async with'"):
            with getattr(async_db, name)():
                pass  # pragma: no cover - never entered
        with pytest.raises(TransactionUsageError, match=rf"^Database.{name}\(\).*use 'with'"):
            async with getattr(db, name)():
                pass  # pragma: no cover - never entered
    assert async_db.pool_stats()["checked_out"] == db.pool_stats()["checked_out"] == 0
    async with async_db.connection() as connection:  # the right colour still works
        assert (await connection.exec_driver_sql("SELECT 1")).scalar() == 1
    with db.driver_connection() as driver:
        assert driver.execute("SELECT 2").fetchone() == (2,)
    block = db.connection()
    with block, pytest.raises(TransactionUsageError, match=r"Database.connection\(\) block is"):
        with block:
            pass  # pragma: no cover - never entered
    assert async_db.pool_stats()["checked_out"] == db.pool_stats()["checked_out"] == 0
