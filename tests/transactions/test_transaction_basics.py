"""db.transaction(), run_transaction() and @transactional: commit, rollback, the session,
isolation levels, read-only, AUTOCOMMIT and the statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import dalkit
from dalkit import (
    AsyncDatabase,
    ConfigurationError,
    Database,
    DatabaseError,
    NoActiveTransactionError,
    TransactionError,
    UniqueViolationError,
)
from dalkit.engine.session import DalkitSession

from .models import Item, create_all, create_all_async, item_names, item_names_async


def test_a_transaction_block_commits_when_it_succeeds(db: Database) -> None:
    create_all(db)
    with db.transaction() as session:
        session.add(Item(name="kept"))
    assert item_names(db) == ["kept"]


def test_a_transaction_block_rolls_back_when_it_raises(db: Database) -> None:
    create_all(db)
    with pytest.raises(RuntimeError, match="boom"), db.transaction() as session:
        session.add(Item(name="lost"))
        session.flush()
        raise RuntimeError("boom")
    assert item_names(db) == []


def test_run_transaction_hands_a_declared_session_and_returns_the_result(db: Database) -> None:
    create_all(db)

    def add(name: str, *, suffix: str, session: Session) -> str:
        session.add(Item(name=name + suffix))
        return name.upper()

    assert db.run_transaction(add, "a", suffix="!") == "A"  # type: ignore[misc, call-arg, arg-type]
    assert item_names(db) == ["a!"]


def test_a_leading_session_parameter_is_filled_in_before_the_callers_arguments(
    db: Database,
) -> None:
    create_all(db)

    @db.transactional
    def add(session: Session, name: str) -> str:
        session.add(Item(name=name))
        return name

    class Names:
        def add(self, session: Session, name: str) -> None:
            session.add(Item(name=name))

    assert add("first") == "first"
    db.run_transaction(Names().add, "bound method")
    db.run_transaction(functools.partial(add.__wrapped__, name="partial"))  # type: ignore[attr-defined, call-overload]
    assert item_names(db) == ["bound method", "first", "partial"]


def test_a_method_decorated_in_its_class_gets_the_session_after_self(db: Database) -> None:
    create_all(db)

    class Orders:
        @db.transactional
        def add(self, session: Session, name: str) -> str:
            session.add(Item(name=name))
            return name

        @classmethod
        @db.transactional(retry=2)
        def add_twice(cls, session: Session, name: str) -> None:
            session.add_all([Item(name=name), Item(name=f"{name} again")])

    orders = Orders()
    assert orders.add("positional") == "positional"
    assert orders.add(name="keyword") == "keyword"
    Orders.add_twice("class")
    assert item_names(db) == ["class", "class again", "keyword", "positional"]


async def test_an_async_method_decorated_in_its_class_gets_the_session_after_self(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    class Orders:
        @async_db.transactional
        async def add(self, session: AsyncSession, name: str) -> str:
            session.add(Item(name=name))
            return name

    assert await Orders().add("positional") == "positional"
    assert await item_names_async(async_db) == ["positional"]


def test_a_function_without_a_session_parameter_gets_none(db: Database) -> None:
    def count(*args: object, **kwargs: object) -> tuple[object, ...]:
        return (args, kwargs)

    assert db.run_transaction(count, 1, key="value") == ((1,), {"key": "value"})


def test_current_session_is_the_transactions_session_anywhere_inside(db: Database) -> None:
    create_all(db)

    def deep_inside() -> None:
        dalkit.current_session().add(Item(name="via current_session"))

    def fn(session: Session) -> bool:
        deep_inside()
        return dalkit.current_session() is session

    assert db.run_transaction(fn)
    assert item_names(db) == ["via current_session"]


def test_current_session_outside_a_transaction_raises() -> None:
    with pytest.raises(NoActiveTransactionError):
        dalkit.current_session()
    with pytest.raises(NoActiveTransactionError):
        dalkit.on_commit(lambda: None)


def test_bare_and_configured_transactional_functions_each_commit_per_call(db: Database) -> None:
    create_all(db)

    @db.transactional
    def add(name: str, session: Session) -> None:
        session.add(Item(name=name))

    @db.transactional(isolation="SERIALIZABLE", read_only=True, retry=3)
    def names() -> list[str]:
        return list(dalkit.current_session().scalars(sa.select(Item.name).order_by(Item.name)))

    add("a")  # a second parameter session is filled in after the first argument
    add("b")
    assert names() == ["a", "b"]
    assert add.__name__ == "add"


def test_an_error_the_database_raises_reaches_the_caller_translated(db: Database) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="dup")))
    with pytest.raises(UniqueViolationError):
        db.run_transaction(lambda session: session.add(Item(name="dup")))


@pytest.mark.parametrize(
    "kwargs",
    [{"isolation": "READ UNCOMMITTED"}, {"isolation": "snapshot"}, {"propagation": "mandatory"}],
)
def test_unknown_isolation_levels_and_propagations_are_configuration_errors(
    db: Database, kwargs: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError, match="unknown"):
        db.transactional(**kwargs)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="unknown"), db.transaction(**kwargs):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "repeatable_read", "SERIALIZABLE"])
def test_every_isolation_level_runs_on_either_backend(db: Database, isolation: str) -> None:
    create_all(db)
    db.transactional(isolation=isolation).run(lambda session: session.add(Item(name=isolation)))  # type: ignore[call-overload]
    assert item_names(db) == [isolation]
    assert db.transaction_stats()["by_isolation"][isolation.upper().replace("_", " ")]["total"] == 1


def test_autocommit_keeps_each_statement_even_when_the_block_fails(db: Database) -> None:
    create_all(db)
    with pytest.raises(RuntimeError), db.transaction(isolation="AUTOCOMMIT") as session:
        session.execute(sa.insert(Item).values(name="already committed"))
        raise RuntimeError("too late to undo")
    assert item_names(db) == ["already committed"]


def test_transaction_stats_count_commits_and_failures(db: Database) -> None:
    create_all(db)
    db.run_transaction(lambda session: session.add(Item(name="one")))

    def refuse() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        db.run_transaction(refuse)
    with db.transaction(isolation="SERIALIZABLE"):
        pass
    stats = db.transaction_stats()
    assert (stats["total"], stats["committed"], stats["failed"], stats["rolled_back"]) == (
        3,
        2,
        1,
        1,
    )
    assert stats["success_rate"] == pytest.approx(2 / 3)
    assert set(stats["by_isolation"]) == {"DEFAULT", "SERIALIZABLE"}
    assert stats["duration_ms"]["p99"] >= stats["duration_ms"]["p50"] > 0


def test_a_transaction_holds_one_connection_and_returns_it(db: Database) -> None:
    create_all(db)

    def fn(session: Session) -> int:
        session.add(Item(name="x"))
        session.flush()
        session.scalar(sa.select(sa.func.count()).select_from(Item))
        return int(db.pool_stats()["checked_out"])

    assert db.run_transaction(fn) == 1
    assert db.pool_stats()["checked_out"] == 0


# --- SQLite: BEGIN IMMEDIATE for writers --------------------------------------------------


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    try:
        yield database
    finally:
        database.dispose()


def _another_writer_can_begin(url: str) -> bool:
    other = sqlite3.connect(make_url(url).database or "", timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False
    finally:
        other.close()


def test_a_sqlite_write_transaction_takes_the_write_lock_as_it_begins(
    sqlite_db: Database, sqlite_url: str
) -> None:
    create_all(sqlite_db)
    with sqlite_db.transaction() as session:
        session.execute(sa.select(1))  # reads only, yet already holds the write lock
        assert not _another_writer_can_begin(sqlite_url)
    assert _another_writer_can_begin(sqlite_url)


def test_a_sqlite_read_only_transaction_leaves_the_write_lock_free(
    sqlite_db: Database, sqlite_url: str
) -> None:
    create_all(sqlite_db)
    with sqlite_db.transaction(read_only=True) as session:
        session.execute(sa.select(sa.func.count()).select_from(Item))
        assert _another_writer_can_begin(sqlite_url)


# --- PostgreSQL: isolation and read-only reach the server, and leave with the connection ---


@pytest.mark.postgres
def test_postgresql_runs_the_asked_isolation_and_read_only_then_resets_them(
    postgres_database_url: str,
) -> None:
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    db = Database(url, pool_size=1, max_overflow=0)  # one connection: every block reuses it
    show = (
        "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')"
    )
    try:
        with db.transaction(isolation="SERIALIZABLE", read_only=True) as session:
            assert tuple(session.execute(sa.text(show)).one()) == ("serializable", "on")
        with db.transaction(isolation="REPEATABLE READ") as session:
            assert tuple(session.execute(sa.text(show)).one()) == ("repeatable read", "off")
        with db.transaction() as session:
            assert tuple(session.execute(sa.text(show)).one()) == ("read committed", "off")
        assert db.pool_stats()["connections_num"] == 1
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgresql_refuses_a_write_in_a_read_only_transaction(pg_db: Database) -> None:
    create_all(pg_db)
    with pytest.raises(DatabaseError) as caught, pg_db.transaction(read_only=True) as session:
        session.execute(sa.insert(Item).values(name="nope"))
    assert caught.value.sqlstate == "25006"


# --- the async API ----------------------------------------------------------------------------


async def test_an_async_transaction_commits_or_rolls_back_like_the_sync_one(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)
    async with async_db.transaction() as session:
        session.add(Item(name="kept"))
    with pytest.raises(RuntimeError):
        async with async_db.transaction() as session:
            session.add(Item(name="lost"))
            await session.flush()
            raise RuntimeError("boom")
    assert await item_names_async(async_db) == ["kept"]


async def test_async_run_transaction_hands_the_session_and_current_async_session(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    async def add(name: str, session: AsyncSession) -> bool:
        dalkit.current_async_session().add(Item(name=name))
        with pytest.raises(NoActiveTransactionError, match="current_async_session"):
            dalkit.current_session()
        return dalkit.current_async_session() is session

    assert await async_db.run_transaction(add, "a")  # type: ignore[call-overload]

    @async_db.transactional(isolation="SERIALIZABLE", read_only=True)
    async def names(session: AsyncSession) -> list[str]:
        return list((await session.scalars(sa.select(Item.name))).all())

    assert await names() == ["a"]


async def test_async_autocommit_keeps_each_statement(async_db: AsyncDatabase) -> None:
    await create_all_async(async_db)

    async def fn(session: AsyncSession) -> None:
        await session.execute(sa.insert(Item).values(name="kept"))
        raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await async_db.transactional(isolation="AUTOCOMMIT").run(fn)
    assert await item_names_async(async_db) == ["kept"]


@pytest.mark.postgres
async def test_asyncpg_runs_the_asked_isolation_and_read_only(pg_async_db: AsyncDatabase) -> None:
    show = (
        "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')"
    )

    async def settings(session: AsyncSession) -> tuple[str, str]:
        row = (await session.execute(sa.text(show))).one()
        return (row[0], row[1])

    read_only = await pg_async_db.transactional(isolation="REPEATABLE READ", read_only=True).run(
        settings
    )
    assert read_only == ("repeatable read", "on")
    assert await pg_async_db.run_transaction(settings) == ("read committed", "off")


async def test_an_async_session_class_of_its_own_commits_and_closes_by_its_methods(
    async_db: AsyncDatabase,
) -> None:
    # the runner commits and closes in one greenlet unless the class has methods of its own
    await create_all_async(async_db)
    calls: list[str] = []

    class Counted(AsyncSession):
        async def commit(self) -> None:
            calls.append("commit")
            await super().commit()

        async def close(self) -> None:
            calls.append("close")
            await super().close()

    async_db.session_factory.class_ = Counted
    async with async_db.transaction() as session:
        session.add(Item(name="kept"))
    assert calls == ["commit", "close"]
    assert await item_names_async(async_db) == ["kept"]


async def test_a_close_failing_after_the_commit_is_raised_and_the_commit_stands(
    async_db: AsyncDatabase,
) -> None:
    await create_all_async(async_db)

    class FailingClose(DalkitSession):
        failed = False

        def close(self) -> None:
            super().close()  # the connection goes back all the same
            if not self.failed:  # the first close: the one that ends the transaction
                self.failed = True
                raise RuntimeError("close failed")

    async_db.session_factory.configure(sync_session_class=FailingClose)
    with pytest.raises(RuntimeError, match="close failed"):
        async with async_db.transaction() as session:
            session.add(Item(name="kept"))
    with pytest.raises(TransactionError, match="has ended"):
        await session.execute(sa.select(1))
    async_db.session_factory.configure(sync_session_class=DalkitSession)
    assert await item_names_async(async_db) == ["kept"]
