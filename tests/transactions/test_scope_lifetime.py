"""A transaction scope ends with its transaction: a task or thread that started inside it and
outlives it gets a transaction of its own, and one that tries to join it while it still runs is
refused, because a session must never be shared between tasks or threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import dalkit
from dalkit import AsyncDatabase, Database, NoActiveTransactionError, TransactionError
from dalkit.transaction.options import DEFAULT_OPTIONS
from dalkit.transaction.scope import TransactionScope

from .models import Item, create_all, create_all_async, item_names, item_names_async


async def test_a_task_that_outlives_its_transaction_gets_one_of_its_own(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    parent_done = asyncio.Event()

    async def late_writer() -> None:
        await parent_done.wait()
        async with async_db.transaction() as session:
            session.add(Item(name="written later"))

    async with async_db.transaction() as session:
        session.add(Item(name="parent"))
        task = asyncio.create_task(late_writer())
    parent_done.set()
    await task
    assert await item_names_async(async_db) == ["parent", "written later"]


async def test_run_transaction_and_units_of_work_in_a_late_task_commit_too(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    parent_done = asyncio.Event()

    async def late() -> None:
        await parent_done.wait()

        async def add(session: AsyncSession) -> None:
            session.add(Item(name="by function"))

        await async_db.run_transaction(add)
        async with dalkit.AsyncUnitOfWork(async_db) as uow:
            uow.session.add(Item(name="by unit"))

    async with async_db.transaction():
        task = asyncio.create_task(late())
    parent_done.set()
    await task
    assert await item_names_async(async_db) == ["by function", "by unit"]


async def test_the_session_of_a_finished_transaction_is_not_current_any_more(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    parent_done = asyncio.Event()

    async def look() -> None:
        await parent_done.wait()
        with pytest.raises(NoActiveTransactionError):
            dalkit.current_async_session()

    async with async_db.transaction():
        task = asyncio.create_task(look())
    parent_done.set()
    await task


async def test_joining_a_running_transaction_from_another_task_is_refused(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def intruder() -> None:
        async with async_db.transaction():
            pass

    async with async_db.transaction():
        with pytest.raises(TransactionError, match="another task"):
            await asyncio.create_task(intruder())


async def test_tasks_started_inside_a_transaction_are_not_handed_its_session(
    async_db: AsyncDatabase,
) -> None:
    # before: current_async_session() gave each task the transaction's session, and two of them
    # side by side failed with SQLAlchemy's raw "concurrent operations are not permitted"
    await create_all_async(async_db)

    async def read() -> None:
        await dalkit.current_async_session().execute(sa.select(Item.name))

    async with async_db.transaction() as session:
        results = await asyncio.gather(read(), read(), return_exceptions=True)
        assert dalkit.current_async_session() is session
    assert [type(result) for result in results] == [TransactionError, TransactionError]
    assert all("another task" in str(result) for result in results)


def test_a_thread_with_a_copy_of_the_transactions_context_is_not_handed_its_session(
    db: Database,
) -> None:
    outcome: list[str] = []

    def look() -> None:
        try:
            dalkit.current_session()
            outcome.append("handed the session")
        except TransactionError as exc:
            outcome.append("refused" if "another thread" in str(exc) else str(exc))

    with db.transaction() as session:
        thread = threading.Thread(target=contextvars.copy_context().run, args=(look,))
        thread.start()
        thread.join()
        assert dalkit.current_session() is session
    assert outcome == ["refused"]


def test_a_thread_started_inside_a_transaction_cannot_join_it_and_gets_its_own_later(
    db: Database,
) -> None:
    create_all(db)
    outcome: list[str] = []
    start_late = threading.Event()

    def intrude() -> None:
        try:
            with db.transaction():
                outcome.append("joined")
        except TransactionError as exc:
            outcome.append("refused" if "another thread" in str(exc) else str(exc))

    def late() -> None:
        start_late.wait()
        with db.transaction() as session:
            session.add(Item(name="late thread"))

    with db.transaction() as session:
        session.add(Item(name="outer"))
        context = contextvars.copy_context()  # as executors and Starlette's threadpool do
        intruder = threading.Thread(target=context.run, args=(intrude,))
        intruder.start()
        intruder.join()
        latecomer = threading.Thread(target=contextvars.copy_context().run, args=(late,))
        latecomer.start()
    start_late.set()
    latecomer.join()
    assert outcome == ["refused"]
    assert item_names(db) == ["late thread", "outer"]


async def test_a_with_block_left_in_another_task_still_commits_and_returns_its_connection(
    async_db: AsyncDatabase,
) -> None:
    # what an async fixture does when its teardown runs in another task than its setup
    await create_all_async(async_db)
    block = async_db.transaction()

    async def enter() -> None:
        session = await block.__aenter__()
        session.add(Item(name="committed"))

    async def leave() -> None:
        await block.__aexit__(None, None, None)

    await asyncio.create_task(enter())
    await asyncio.create_task(leave())
    assert async_db.pool_stats()["checked_out"] == 0
    assert await item_names_async(async_db) == ["committed"]
    with pytest.raises(NoActiveTransactionError):
        dalkit.current_async_session()


def test_a_with_block_left_in_another_thread_still_commits(db: Database) -> None:
    create_all(db)
    block = db.transaction()
    session = block.__enter__()
    session.add(Item(name="committed"))
    failures: list[BaseException] = []

    def leave() -> None:
        try:
            block.__exit__(None, None, None)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=leave)
    thread.start()
    thread.join()
    assert failures == []
    assert db.pool_stats()["checked_out"] == 0
    assert item_names(db) == ["committed"]
    with pytest.raises(NoActiveTransactionError):
        dalkit.current_session()


def test_a_running_scope_is_its_own_live_scope_without_a_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walks: list[TransactionScope] = []
    ancestors = TransactionScope.ancestors

    def counted(self: TransactionScope) -> Iterator[TransactionScope]:
        walks.append(self)
        return ancestors(self)

    monkeypatch.setattr(TransactionScope, "ancestors", counted)
    outer = TransactionScope(None, None, DEFAULT_OPTIONS)
    inner = TransactionScope(None, None, DEFAULT_OPTIONS, outer)
    assert inner.live() is inner  # running: itself, no walk
    assert walks == []
    inner.finished = True
    assert inner.live() is outer  # ended: the walk finds the one around it
    inner.finished = False
    inner.ending = object()  # being ended by another thread: ended to this one
    assert inner.live() is outer
    inner.ending = inner.current_holder()  # being ended by this thread: still running here
    assert inner.live() is inner
    assert walks == [inner, inner, inner]
