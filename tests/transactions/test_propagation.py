"""Propagation: "required" joins, "nested" is a savepoint, "requires_new" is a transaction of
its own on another connection; and what SQLite cannot do."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dalkit
from dalkit import AsyncDatabase, Database, TransactionError

from .models import Item, create_all, create_all_async, item_names, item_names_async


def _count(session: Session) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(Item)) or 0)


def test_required_joins_the_surrounding_transaction_and_its_session(db: Database) -> None:
    create_all(db)

    def inner(session: Session) -> tuple[Session, int]:
        session.add(Item(name="inner"))
        session.flush()
        return session, _count(session)

    with pytest.raises(RuntimeError), db.transaction() as outer:
        outer.add(Item(name="outer"))
        outer.flush()
        joined, seen = db.run_transaction(inner)
        assert joined is outer
        assert seen == 2
        raise RuntimeError("the outer transaction decides")
    assert db.transaction_stats()["total"] == 1  # a joined call is not a transaction of its own
    assert item_names(db) == []


def test_an_inner_failure_in_a_joined_function_propagates(db: Database) -> None:
    def inner() -> None:
        raise LookupError("inner")

    with pytest.raises(LookupError), db.transaction():
        db.run_transaction(inner)


def test_a_nested_failure_rolls_back_only_the_inner_work(db: Database) -> None:
    create_all(db)

    @db.transactional(propagation="nested")
    def inner(name: str, session: Session) -> None:
        session.add(Item(name=name))
        session.flush()
        raise LookupError("inner fails")

    @db.transactional
    def outer(session: Session) -> int:
        session.add(Item(name="outer"))
        with pytest.raises(LookupError):
            inner("inner")  # a second parameter session is filled in after the first argument
        return _count(session)

    assert outer() == 1
    assert item_names(db) == ["outer"]


def test_nested_without_a_surrounding_transaction_starts_one(db: Database) -> None:
    create_all(db)
    db.transactional(propagation="nested").run(lambda session: session.add(Item(name="alone")))
    assert item_names(db) == ["alone"]


def test_a_transaction_of_another_database_is_not_joined(db: Database, tmp_path: Path) -> None:
    create_all(db)
    other = Database(f"sqlite:///{tmp_path}/other.db")
    try:
        create_all(other)
        with db.transaction() as mine:
            with other.transaction() as theirs:
                assert theirs is not mine
                assert dalkit.current_session() is theirs
                theirs.add(Item(name="other"))
            assert dalkit.current_session() is mine
        assert item_names(other) == ["other"]
    finally:
        other.dispose()


def test_joining_at_another_isolation_level_is_refused(db: Database) -> None:
    with db.transaction(isolation="SERIALIZABLE"):
        with pytest.raises(TransactionError, match="requires_new"):
            db.transactional(isolation="READ COMMITTED").run(lambda: None)
        db.transactional(isolation="SERIALIZABLE").run(lambda: None)
        db.run_transaction(lambda: None)  # no preference: joins whatever runs


def test_a_savepoint_inside_an_autocommit_transaction_is_refused(db: Database) -> None:
    # before, PostgreSQL refused the SAVEPOINT itself (DatabaseError: SAVEPOINT can only be
    # used in transaction blocks) while SQLite's began a transaction of its own
    create_all(db)
    with db.transaction(isolation="AUTOCOMMIT"):
        with pytest.raises(TransactionError, match="savepoint in an AUTOCOMMIT"):
            with db.transaction(propagation="nested") as session:
                session.add(Item(name="in no transaction block"))
        with pytest.raises(TransactionError, match="savepoint in an AUTOCOMMIT"):
            db.transactional(propagation="nested").run(lambda: None)
    assert item_names(db) == []
    assert db.pool_stats()["checked_out"] == 0


def test_writing_inside_a_read_only_transaction_is_refused(db: Database) -> None:
    with db.transaction(read_only=True), pytest.raises(TransactionError, match="read-only"):
        db.transactional(propagation="nested").run(lambda: None)


def test_db_sql_reads_inside_a_read_only_transaction_and_its_write_is_refused(
    db: Database,
) -> None:
    # db.sql()'s SELECT was refused there ("cannot write inside a read-only transaction"),
    # though the docs say db.sql() joins the current transaction
    create_all(db)
    with db.transaction(read_only=True):
        assert db.sql("SELECT count(*) AS n FROM items") == [{"n": 0}]
        with pytest.raises(dalkit.ReadOnlyTransactionError):
            db.sql("INSERT INTO items (name) VALUES ('x')")
    assert db.transactional(read_only=True).run(lambda: db.sql("SELECT 1 AS one")) == [{"one": 1}]
    assert item_names(db) == []


async def test_async_db_sql_reads_inside_a_read_only_transaction_and_its_write_is_refused(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    async with async_db.transaction(read_only=True):
        assert await async_db.sql("SELECT count(*) AS n FROM items") == [{"n": 0}]
        with pytest.raises(dalkit.ReadOnlyTransactionError):
            await async_db.sql("INSERT INTO items (name) VALUES ('x')")
    assert await item_names_async(async_db) == []


@pytest.mark.postgres
def test_requires_new_commits_independently_of_the_outer_transaction(pg_db: Database) -> None:
    create_all(pg_db)

    @pg_db.transactional(propagation="requires_new")
    def audit(message: str, session: Session) -> int:
        session.add(Item(name=message))
        session.flush()
        return _count(session)

    with pytest.raises(RuntimeError), pg_db.transaction() as session:
        session.add(Item(name="outer"))
        session.flush()
        # its own session (a second parameter, filled in after the first argument) cannot see
        # the outer, uncommitted row
        assert audit("audit") == 1
        assert dalkit.current_session() is session
        raise RuntimeError("outer rolls back")
    assert item_names(pg_db) == ["audit"]


@pytest.fixture
def file_sqlite(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    create_all(database)
    try:
        yield database
    finally:
        database.dispose()


def test_sqlite_requires_new_writes_inside_a_read_only_transaction(file_sqlite: Database) -> None:
    with pytest.raises(RuntimeError), file_sqlite.transaction(read_only=True):
        with file_sqlite.transaction(propagation="requires_new") as inner:
            inner.add(Item(name="independent"))
        raise RuntimeError("outer fails")
    assert item_names(file_sqlite) == ["independent"]


def test_sqlite_refuses_a_requires_new_writer_that_would_wait_for_its_caller(
    file_sqlite: Database,
) -> None:
    with file_sqlite.transaction(), pytest.raises(TransactionError, match="one writer"):
        file_sqlite.transactional(propagation="requires_new").run(lambda: None)


def test_a_thread_started_inside_a_writer_may_write_in_a_transaction_of_its_own(
    db: Database,
) -> None:
    # SQLite refused it as a writer waiting for itself: its caller does not wait for it
    create_all(db)
    failures: list[BaseException] = []

    def audit_record() -> None:
        try:
            with db.transaction(propagation="requires_new") as own:
                own.add(Item(name="thread"))
        except BaseException as error:
            failures.append(error)

    with db.transaction() as outer:
        outer.add(Item(name="outer"))
        outer.flush()
        # what asyncio.to_thread() and a context-copying executor do
        thread = threading.Thread(target=contextvars.copy_context().run, args=(audit_record,))
        thread.start()
    thread.join(30)
    assert failures == []
    assert item_names(db) == ["outer", "thread"]


async def test_a_task_started_inside_a_writer_may_write_in_a_transaction_of_its_own(
    async_db: AsyncDatabase,
) -> None:
    # SQLite refused it (a web request's task writing with requires_new, as docs/web.md says)
    await create_all_async(async_db)

    async def audit_record() -> None:
        async with async_db.transaction(propagation="requires_new") as own:
            own.add(Item(name="task"))

    async with async_db.transaction() as outer:
        outer.add(Item(name="outer"))
        await outer.flush()
        task = asyncio.create_task(audit_record())
        await asyncio.sleep(0)  # it starts, and waits for the lock where SQLite has one
    await task
    assert await item_names_async(async_db) == ["outer", "task"]


async def test_sqlite_refuses_a_requires_new_writer_in_a_task_its_writer_awaits(
    sqlite_url: str,
) -> None:
    db = AsyncDatabase(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://"))
    await create_all_async(db)

    async def audit_record() -> None:
        async with db.transaction(propagation="requires_new") as own:
            own.add(Item(name="task"))

    try:
        async with db.transaction() as outer:
            outer.add(Item(name="outer"))
            with pytest.raises(TransactionError, match="one writer"):  # not a wait for itself
                await asyncio.create_task(audit_record())
        assert await item_names_async(db) == ["outer"]
    finally:
        await db.dispose()


def test_in_memory_sqlite_refuses_requires_new() -> None:
    db = Database("sqlite://")
    try:
        with db.transaction(read_only=True), pytest.raises(TransactionError, match="in-memory"):
            db.transactional(propagation="requires_new", read_only=True).run(lambda: None)
    finally:
        db.dispose()


# --- the async API ----------------------------------------------------------------------------


async def test_async_nested_failure_rolls_back_only_the_inner_work(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    async with async_db.transaction() as session:
        session.add(Item(name="outer"))
        with pytest.raises(LookupError):
            async with async_db.transaction(propagation="nested") as inner:
                assert inner is session
                inner.add(Item(name="inner"))
                await inner.flush()
                raise LookupError("inner fails")
    assert await item_names_async(async_db) == ["outer"]


@pytest.mark.postgres
async def test_async_requires_new_commits_independently(pg_async_db: AsyncDatabase) -> None:
    db = pg_async_db
    await create_all_async(db)

    async def audit(session: AsyncSession) -> None:
        session.add(Item(name="audit"))

    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            session.add(Item(name="outer"))
            await db.transactional(propagation="requires_new").run(audit)
            raise RuntimeError("outer rolls back")
    assert await item_names_async(db) == ["audit"]
