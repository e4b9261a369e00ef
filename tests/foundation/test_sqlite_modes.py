"""SQLite done safely: an in-memory database shared by threads and tasks loses no write, and a
read-only transaction refuses writes, as PostgreSQL's does, leaving the connection writable."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database, ReadOnlyTransactionError

from .models import Account, Base


def _count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Account)) or 0


def test_two_threads_on_an_in_memory_database_lose_no_transaction() -> None:
    with Database("sqlite://") as db:
        Base.metadata.create_all(db.engine)
        barrier = threading.Barrier(2)

        def work(name: str) -> None:
            barrier.wait()
            for number in range(50):
                with db.transaction() as session:
                    session.add(Account(email=f"{name}-{number}@example.com"))
                    session.flush()
                    # a second statement in the transaction, where the other thread would
                    # interleave its own on a shared connection
                    session.execute(sa.update(Account).values(balance=Account.balance + 1))

        threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _count(db) == 100


async def test_two_tasks_on_an_in_memory_database_lose_no_transaction() -> None:
    async with AsyncDatabase("sqlite+aiosqlite://") as db:
        async with db.connection() as connection:
            await connection.run_sync(Base.metadata.create_all)

        async def work(name: str) -> None:
            for number in range(50):
                async with db.transaction() as session:
                    session.add(Account(email=f"{name}-{number}@example.com"))
                    await session.flush()
                    await asyncio.sleep(0)  # let the other task run mid-transaction
                    await session.execute(sa.update(Account).values(balance=Account.balance + 1))

        await asyncio.gather(work("a"), work("b"))
        async with db.session() as session:
            count = await session.scalar(sa.select(sa.func.count()).select_from(Account))
    assert count == 100


def test_an_in_memory_database_keeps_its_data_across_transactions_and_threads() -> None:
    with Database("sqlite://") as db:
        Base.metadata.create_all(db.engine)
        thread = threading.Thread(target=lambda: _add(db, "t@example.com"))
        thread.start()
        thread.join()
        assert _count(db) == 1


def _add(db: Database, email: str) -> None:
    with db.transaction() as session:
        session.add(Account(email=email))


def test_a_read_only_transaction_refuses_writes(db_url: str) -> None:
    with Database(db_url, pool_size=1, max_overflow=0) as db:
        Base.metadata.create_all(db.engine)
        with pytest.raises(ReadOnlyTransactionError), db.transaction(read_only=True) as session:
            session.add(Account(email="sneaky@example.com"))
            session.flush()
        assert _count(db) == 0
        # the same pooled connection writes again once the read-only transaction is over
        _add(db, "fine@example.com")
        with db.transaction(read_only=True) as session:
            assert session.scalar(sa.select(Account.email)) == "fine@example.com"
        _add(db, "also-fine@example.com")
        assert _count(db) == 2


async def test_an_async_read_only_transaction_refuses_writes(async_db_url: str) -> None:
    async with AsyncDatabase(async_db_url, pool_size=1, max_overflow=0) as db:
        async with db.connection() as connection:
            await connection.run_sync(Base.metadata.create_all)
        with pytest.raises(ReadOnlyTransactionError):
            async with db.transaction(read_only=True) as session:
                await session.execute(sa.insert(Account).values(email="sneaky@example.com"))
        async with db.transaction() as session:
            session.add(Account(email="fine@example.com"))
        async with db.transaction(read_only=True) as session:
            emails = (await session.scalars(sa.select(Account.email))).all()
    assert emails == ["fine@example.com"]


def test_a_read_only_transactional_call_on_sqlite_refuses_raw_writes(sqlite_url: str) -> None:
    with Database(sqlite_url) as db:
        Base.metadata.create_all(db.engine)
        _add(db, "a@example.com")

        def sneak(session: sa.orm.Session) -> None:
            session.execute(sa.text("DELETE FROM accounts"))

        with pytest.raises(ReadOnlyTransactionError, match="readonly"):
            db.transactional(read_only=True).run(sneak)
        assert _count(db) == 1
