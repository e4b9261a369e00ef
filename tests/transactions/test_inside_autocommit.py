"""A transaction opened inside an AUTOCOMMIT one (``db.transaction()``, ``db.session()``, a
transactional function, at any level but AUTOCOMMIT) is a real transaction of its own, on its
own connection: before, a default one joined the AUTOCOMMIT session, and a write it made stayed
when it raised. db.sql()'s one statement still joins, so ``CREATE INDEX CONCURRENTLY`` runs.
A unit of work (a savepoint) there is refused saying to open it in such a transaction."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dalkit
from dalkit import AsyncDatabase, Database, TransactionError

from .models import Item, create_all, create_all_async, item_names, item_names_async


def test_a_transaction_inside_autocommit_rolls_back_its_own_writes(db: Database) -> None:
    create_all(db)

    @db.transactional
    def add_and_fail(session: Session, name: str) -> None:
        session.add(Item(name=name))
        session.flush()
        raise RuntimeError(name)

    with db.transaction(isolation="AUTOCOMMIT") as outer:
        outer.add(Item(name="autocommitted"))
        outer.flush()
        with pytest.raises(RuntimeError), db.transaction() as inner:
            assert inner is not outer
            assert dalkit.current_session() is inner
            inner.add(Item(name="block"))
            inner.flush()
            raise RuntimeError("undo the block")
        with pytest.raises(RuntimeError):
            add_and_fail("function")
        with pytest.raises(RuntimeError), db.session() as inner:
            inner.add(Item(name="session"))
            inner.flush()
            raise RuntimeError("undo the session")
        with pytest.raises(RuntimeError), db.transaction(isolation="SERIALIZABLE") as inner:
            inner.add(Item(name="serializable"))  # before: refused, a level it cannot join
            inner.flush()
            raise RuntimeError("undo it")
        committed: list[str] = []
        with db.transaction() as inner:
            inner.add(Item(name="committed"))
            dalkit.on_commit(lambda: committed.append("at its own commit"))
        assert committed == ["at its own commit"]
        assert dalkit.current_session() is outer
        with db.transaction(isolation="AUTOCOMMIT") as joined:  # AUTOCOMMIT still joins
            assert joined is outer
    assert item_names(db) == ["autocommitted", "committed"]
    assert db.pool_stats()["checked_out"] == 0


async def test_an_async_transaction_inside_autocommit_rolls_back_its_own_writes(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    @async_db.transactional
    async def add_and_fail(session: AsyncSession, name: str) -> None:
        session.add(Item(name=name))
        await session.flush()
        raise RuntimeError(name)

    async with async_db.transaction(isolation="AUTOCOMMIT") as outer:
        outer.add(Item(name="autocommitted"))
        await outer.flush()
        with pytest.raises(RuntimeError):
            async with async_db.transaction() as inner:
                assert inner is not outer
                inner.add(Item(name="block"))
                await inner.flush()
                raise RuntimeError("undo the block")
        with pytest.raises(RuntimeError):
            await add_and_fail("function")
        async with async_db.transaction() as inner:
            inner.add(Item(name="committed"))
        assert dalkit.current_async_session() is outer
    assert await item_names_async(async_db) == ["autocommitted", "committed"]
    assert async_db.pool_stats()["checked_out"] == 0


def test_a_statement_of_db_sql_joins_the_autocommit_transaction(db: Database) -> None:
    create_all(db)
    with db.transaction(isolation="AUTOCOMMIT") as outer:
        outer.add(Item(name="autocommitted"))
        outer.flush()
        # one statement commits by itself either way; on SQLite a transaction of its own
        # would also have to wait for nothing, but joining keeps it on the same connection
        assert db.sql("SELECT count(*) AS n FROM items") == [{"n": 1}]
        assert db.pool_stats()["checked_out"] == 1
    assert item_names(db) == ["autocommitted"]


@pytest.mark.postgres
async def test_create_index_concurrently_runs_through_db_sql_inside_autocommit(
    pg_db: Database, pg_async_db: AsyncDatabase
) -> None:
    create_all(pg_db)
    with pg_db.transaction(isolation="AUTOCOMMIT"):
        pg_db.sql("CREATE INDEX CONCURRENTLY ix_items_a ON items (name)")
    async with pg_async_db.transaction(isolation="AUTOCOMMIT"):
        await pg_async_db.sql("CREATE INDEX CONCURRENTLY ix_items_b ON items (id, name)")
    indexes = pg_db.sql("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_items_%'")
    assert sorted(row["indexname"] for row in indexes) == ["ix_items_a", "ix_items_b"]


def test_in_memory_sqlite_refuses_a_transaction_inside_autocommit_saying_what_works() -> None:
    db = Database("sqlite://")  # one connection: a transaction of its own cannot start
    try:
        create_all(db)
        with db.transaction(isolation="AUTOCOMMIT"):
            with pytest.raises(TransactionError, match="after the AUTOCOMMIT transaction"):
                with db.transaction():
                    pass  # pragma: no cover - never entered
            db.sql("INSERT INTO items (name) VALUES ('joined')")
        assert item_names(db) == ["joined"]
    finally:
        db.dispose()


def test_a_unit_of_work_inside_autocommit_is_refused_saying_what_works(db: Database) -> None:
    create_all(db)
    with db.transaction(isolation="AUTOCOMMIT"):
        with pytest.raises(TransactionError, match="unit of work") as refused:
            with dalkit.UnitOfWork(db):
                pass  # pragma: no cover - never entered
        assert "requires_new" not in str(refused.value)  # a unit of work cannot take it
        with db.transaction(), dalkit.UnitOfWork(db) as uow:  # what the refusal advises
            uow.session.add(Item(name="in a transaction of its own"))
    assert item_names(db) == ["in a transaction of its own"]


async def test_an_async_unit_of_work_inside_autocommit_is_refused_saying_what_works(
    async_db: AsyncDatabase,
) -> None:
    async with async_db.transaction(isolation="AUTOCOMMIT"):
        with pytest.raises(TransactionError, match=r"db\.transaction\(\)"):
            async with dalkit.AsyncUnitOfWork(async_db):
                pass  # pragma: no cover - never entered
