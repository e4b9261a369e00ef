"""What a transaction refuses rather than lose work silently: a function whose body would run
after the commit, a session used after its transaction ended, a write in a read-only AUTOCOMMIT
transaction, ``session.commit()`` inside the block or function that owns the transaction. And
what it allows: a task or thread started inside a transaction asking for one of its own; a call
cancelled while it waits to retry counts as failed."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    Database,
    ReadOnlyTransactionError,
    RetryPolicy,
    SerializationError,
    TransactionError,
    on_commit,
    on_rollback,
)

from .models import Item, create_all, create_all_async, item_names, item_names_async


def test_generator_and_coroutine_functions_are_refused_by_a_sync_transaction(
    db: Database,
) -> None:
    create_all(db)

    def rows(session: Session) -> Iterator[int]:
        session.add(Item(name="after the commit"))
        yield 1

    async def coroutine(session: Session) -> None:
        session.add(Item(name="never awaited"))

    for fn in (rows, coroutine):
        with pytest.raises(TypeError, match=fn.__qualname__):
            db.transactional(fn)
        with pytest.raises(TypeError, match=fn.__qualname__):
            db.run_transaction(fn)
    assert item_names(db) == []
    assert db.pool_stats()["checked_out"] == 0


def test_a_callable_that_returns_a_coroutine_is_refused_before_the_commit(db: Database) -> None:
    # its __call__ is a coroutine function, which the check of the function cannot see: before,
    # the transaction committed nothing and handed the caller the work, unawaited
    create_all(db)

    class Writer:
        async def __call__(self, session: Session) -> None:
            session.add(Item(name="never awaited"))

    rolled_back: list[str] = []

    def write(session: Session) -> object:
        session.add(Item(name="rolled back"))
        on_rollback(lambda: rolled_back.append("yes"))
        return Writer()(session)

    for fn in (Writer(), write):
        with pytest.raises(TypeError, match="returned a coroutine"):
            db.run_transaction(fn)
    assert item_names(db) == []
    assert rolled_back == ["yes"]
    assert db.transaction_stats()["failed"] == 2


async def test_an_async_function_that_returns_a_coroutine_is_refused_before_the_commit(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def later(session: AsyncSession) -> None:
        session.add(Item(name="never awaited"))

    async def write(session: AsyncSession) -> object:
        session.add(Item(name="rolled back"))
        return later(session)

    with pytest.raises(TypeError, match="returned a coroutine"):
        await async_db.run_transaction(write)
    assert await item_names_async(async_db) == []


async def test_generator_functions_are_refused_by_an_async_transaction(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def rows(session: AsyncSession) -> AsyncIterator[int]:
        session.add(Item(name="after the commit"))
        yield 1

    def plain_rows(session: AsyncSession) -> Iterator[int]:
        yield 1

    # a type checker refuses them too; this is what an untyped caller gets
    for fn in (rows, plain_rows):
        with pytest.raises(TypeError, match=fn.__qualname__):
            async_db.transactional(fn)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=fn.__qualname__):
            await async_db.transactional(retry=2).run(fn)  # type: ignore[call-overload]
    assert await item_names_async(async_db) == []


def test_a_session_used_after_its_transaction_ended_refuses_to_begin_another(
    db: Database,
) -> None:
    create_all(db)
    with db.transaction() as session:
        session.add(Item(name="kept"))
    with pytest.raises(TransactionError, match="has ended"):
        session.add(Item(name="lost"))
    with pytest.raises(TransactionError, match="has ended"):
        session.execute(sa.select(Item.name))
    # no transaction was left open on a connection nobody gives back (nor, on SQLite, the
    # write lock held by it)
    assert db.pool_stats()["checked_out"] == 0
    assert item_names(db) == ["kept"]


async def test_an_async_session_used_after_its_function_returned_refuses_to_begin_another(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def add(session: AsyncSession) -> AsyncSession:
        session.add(Item(name="kept"))
        return session

    session = await async_db.run_transaction(add)
    with pytest.raises(TransactionError, match="has ended"):
        await session.execute(sa.text("INSERT INTO items (name) VALUES ('lost')"))
    assert async_db.pool_stats()["checked_out"] == 0
    assert await item_names_async(async_db) == ["kept"]


async def test_a_task_started_inside_a_transaction_may_start_one_of_its_own(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def audit_record() -> None:
        async with async_db.transaction(propagation="requires_new") as own:
            own.add(Item(name="own transaction"))

    async with async_db.transaction(read_only=True):
        await asyncio.create_task(audit_record())
    assert await item_names_async(async_db) == ["own transaction"]


def test_a_thread_that_inherited_a_transaction_may_start_one_of_its_own(db: Database) -> None:
    create_all(db)
    failures: list[BaseException] = []

    def audit_record() -> None:
        try:
            with db.transaction(propagation="requires_new") as own:
                own.add(Item(name="own transaction"))
        except BaseException as error:
            failures.append(error)

    with db.transaction(read_only=True):
        # what asyncio.to_thread() and a context-copying executor do
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(audit_record,))
        thread.start()
        thread.join()
    assert failures == []
    assert item_names(db) == ["own transaction"]


async def test_a_call_cancelled_while_waiting_to_retry_counts_as_failed(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    rolled_back = asyncio.Event()

    async def conflicting(session: AsyncSession) -> None:
        session.add(Item(name="rolled back"))
        await session.flush()
        on_rollback(rolled_back.set)  # run just before the backoff
        raise SerializationError("could not serialize access", sqlstate="40001")

    policy = RetryPolicy(attempts=3, base_delay=30.0, max_delay=30.0, jitter=0.0)
    task = asyncio.create_task(async_db.transactional(retry=policy).run(conflicting))
    await rolled_back.wait()
    await asyncio.sleep(0.05)  # into the backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = async_db.transaction_stats()
    assert (stats["total"], stats["failed"], stats["rolled_back"], stats["retries"]) == (1, 1, 1, 0)
    assert async_db.pool_stats()["checked_out"] == 0


def test_a_read_only_autocommit_transaction_refuses_writes_and_reads(db: Database) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="existing")))
    with (
        pytest.raises(ReadOnlyTransactionError),
        db.transaction(isolation="AUTOCOMMIT", read_only=True) as session,
    ):
        assert session.scalars(sa.select(Item.name)).all() == ["existing"]
        session.execute(sa.insert(Item).values(name="written anyway"))
    # the connection writes again afterwards
    db.run_transaction(lambda session: session.add(Item(name="later")))
    assert item_names(db) == ["existing", "later"]


async def test_an_async_read_only_autocommit_transaction_refuses_writes(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def write(session: AsyncSession) -> None:
        await session.execute(sa.insert(Item).values(name="written anyway"))

    with pytest.raises(ReadOnlyTransactionError):
        await async_db.transactional(isolation="AUTOCOMMIT", read_only=True).run(write)
    await async_db.transactional(isolation="AUTOCOMMIT").run(write)
    assert await item_names_async(async_db) == ["written anyway"]


def test_session_commit_inside_the_block_that_owns_the_transaction_is_refused(
    db: Database,
) -> None:
    # before, the commit made the first row permanent: the block's error rolled back only
    # what followed, and the on_commit callback of the committed part never ran
    create_all(db)
    ran: list[str] = []
    with pytest.raises(TransactionError, match=r"session\.commit\(\) inside"):
        with db.transaction() as session:
            session.add(Item(name="first part"))
            on_commit(lambda: ran.append("committed"))
            session.commit()
            session.add(Item(name="second part"))
    with pytest.raises(TransactionError, match=r"session\.commit\(\) inside"):
        with db.session() as session, db.transaction(propagation="nested") as joined:
            joined.add(Item(name="in a savepoint"))
            session.commit()
    assert item_names(db) == []
    assert ran == []
    assert db.pool_stats()["checked_out"] == 0


def test_a_retried_function_that_calls_session_commit_writes_nothing_twice(
    db: Database,
) -> None:
    # before, each attempt committed its row before failing: one call, two orders
    create_all(db)
    attempts: list[int] = []

    @db.transactional(retry=RetryPolicy(attempts=3, base_delay=0.001))
    def place(session: Session) -> None:
        attempts.append(len(attempts))
        session.add(Item(name=f"order {len(attempts)}"))
        session.commit()

    with pytest.raises(TransactionError, match=r"session\.commit\(\) inside"):
        place()
    assert attempts == [0]  # a TransactionError is no conflict: not retried
    assert item_names(db) == []
    # the ordinary ways of committing still work, and a session of one's own commits
    db.run_transaction(lambda session: session.add(Item(name="kept")))
    with db.transaction(), db.session_factory() as own:
        own.add(Item(name="own session"))
        own.commit()
    assert item_names(db) == ["kept", "own session"]


async def test_an_async_session_commit_inside_its_transaction_is_refused(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def place(session: AsyncSession) -> None:
        session.add(Item(name="first part"))
        await session.commit()

    with pytest.raises(TransactionError, match=r"session\.commit\(\) inside"):
        await async_db.transactional(retry=RetryPolicy(attempts=3, base_delay=0.001)).run(place)
    with pytest.raises(TransactionError, match=r"session\.commit\(\) inside"):
        async with async_db.transaction() as session:
            session.add(Item(name="in a block"))
            await session.commit()
    assert await item_names_async(async_db) == []
    assert async_db.pool_stats()["checked_out"] == 0
