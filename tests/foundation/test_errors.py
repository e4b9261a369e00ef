"""Driver errors arrive as dalkit's typed errors, raised from the original, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    CheckViolationError,
    Database,
    DatabaseError,
    ForeignKeyViolationError,
    LockNotAvailableError,
    NotNullViolationError,
    ReadOnlyTransactionError,
    StatementTimeoutError,
    UniqueViolationError,
)

from .models import Account, Base, Transfer


@pytest.fixture
def schema_db(db: Database) -> Database:
    Base.metadata.create_all(db.engine)
    with db.session() as session:
        session.add(Account(email="a@example.com", balance=5))
    return db


def test_a_duplicate_key_raises_unique_violation(schema_db: Database) -> None:
    with pytest.raises(UniqueViolationError) as caught, schema_db.session() as session:
        session.add(Account(email="a@example.com"))
    # raised from the driver's own exception, as SQLAlchemy raises its wrapper
    assert type(caught.value.__cause__).__module__.split(".")[0] in ("psycopg", "sqlite3")


def test_a_missing_parent_raises_foreign_key_violation(schema_db: Database) -> None:
    with pytest.raises(ForeignKeyViolationError), schema_db.session() as session:
        session.add(Transfer(account_id=999, amount=1))


def test_a_failed_check_raises_check_violation(schema_db: Database) -> None:
    with pytest.raises(CheckViolationError), schema_db.connection() as connection:
        connection.execute(sa.update(Account).values(balance=-1))


def test_a_null_in_a_required_column_raises_not_null_violation(schema_db: Database) -> None:
    with pytest.raises(NotNullViolationError), schema_db.connection() as connection:
        connection.execute(sa.insert(Account).values(email=None))


@pytest.mark.postgres
def test_the_unique_violation_names_the_constraint_on_postgres(
    postgres_database_url: str,
) -> None:
    with Database(postgres_database_url) as db:
        Base.metadata.create_all(db.engine)
        with db.session() as session:
            session.add(Account(email="a@example.com"))
        with pytest.raises(UniqueViolationError) as caught, db.session() as session:
            session.add(Account(email="a@example.com"))
        assert caught.value.sqlstate == "23505"
        assert caught.value.constraint == "accounts_email_key"


async def _async_schema(async_db: AsyncDatabase) -> None:
    """The schema, with account 1 (a@example.com, balance 0)."""
    async with async_db.connection() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(sa.insert(Account).values(id=1, email="a@example.com"))


async def test_async_drivers_map_to_the_same_errors(async_db: AsyncDatabase) -> None:
    await _async_schema(async_db)
    with pytest.raises(UniqueViolationError):
        async with async_db.connection() as connection:
            await connection.execute(sa.insert(Account).values(email="a@example.com"))
    with pytest.raises(ForeignKeyViolationError):
        async with async_db.connection() as connection:
            await connection.execute(sa.insert(Transfer).values(account_id=7, amount=1))


def test_an_unclassified_error_is_still_a_dalkit_database_error(db: Database) -> None:
    with pytest.raises(DatabaseError) as caught, db.connection() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    assert type(caught.value) is DatabaseError
    assert "no_such_table" in str(caught.value)


@pytest.mark.postgres
def test_a_statement_past_its_timeout_raises_statement_timeout(
    postgres_database_url: str,
) -> None:
    with Database(postgres_database_url, statement_timeout_ms=50) as db:
        with pytest.raises(StatementTimeoutError), db.connection() as connection:
            connection.exec_driver_sql("SELECT pg_sleep(2)")


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_a_lock_not_taken_raises_lock_not_available_and_is_not_retried(
    postgres_database_url: str, driver: str
) -> None:
    # SQLSTATE 55P03 was a bare DatabaseError: FOR UPDATE NOWAIT on a held row, and a wait past
    # lock_timeout, each get the class of their own, sync and async, and no retry
    url = sa.make_url(postgres_database_url)
    with Database(url.set(drivername="postgresql+psycopg")) as holder_db:
        Base.metadata.create_all(holder_db.engine)
        with holder_db.session() as session:
            session.add(Account(email="locked@example.com", balance=1))
        async with AsyncDatabase(url.set(drivername=f"postgresql+{driver}")) as other:
            calls = 0

            async def nowait(session: AsyncSession) -> object:
                nonlocal calls
                calls += 1
                lock = sa.select(Account).with_for_update(nowait=True)
                return (await session.execute(lock)).scalars().all()

            with holder_db.transaction() as held:
                held.execute(sa.select(Account).with_for_update())  # holds every row's lock
                with pytest.raises(LockNotAvailableError) as caught:
                    await other.run_transaction(nowait)
                assert calls == 1  # not retried
                assert caught.value.sqlstate == "55P03"
                with pytest.raises(LockNotAvailableError):
                    async with other.transaction() as waiting_session:
                        await waiting_session.execute(sa.text("SET LOCAL lock_timeout = '50ms'"))
                        await waiting_session.execute(sa.update(Account).values(balance=2))
                with pytest.raises(LockNotAvailableError), holder_db.engine.connect() as waiting:
                    waiting.exec_driver_sql("SET lock_timeout = '50ms'")
                    waiting.exec_driver_sql("UPDATE accounts SET balance = 3")
        with holder_db.session() as session:  # nothing was written by the refused ones
            assert list(session.scalars(sa.select(Account.balance))) == [1]


def _balances(db: Database) -> list[int]:
    with db.session() as session:
        return list(session.scalars(sa.select(Account.balance)))


def test_every_write_in_a_read_only_transaction_raises_read_only_transaction_error(
    schema_db: Database,
) -> None:
    writes: dict[str, Callable[[Session], object]] = {
        "ORM flush": lambda session: session.add(Account(email="b@example.com")),
        "Core": lambda session: session.execute(sa.update(Account).values(balance=7)),
        "raw SQL": lambda session: session.connection().exec_driver_sql(
            "UPDATE accounts SET balance = 8"
        ),
        "DDL": lambda session: session.connection().exec_driver_sql("CREATE TABLE t (id int)"),
    }
    for name, write in writes.items():
        with pytest.raises(ReadOnlyTransactionError) as caught:
            with schema_db.transaction(read_only=True) as session:
                write(session)
        if schema_db.engine.dialect.name == "postgresql":
            assert caught.value.sqlstate == "25006", name
        assert _balances(schema_db) == [5], name
    # the connection went back writable
    with schema_db.transaction() as session:
        session.execute(sa.update(Account).values(balance=6))
    assert _balances(schema_db) == [6]


def test_a_read_only_transactional_function_is_not_retried(schema_db: Database) -> None:
    calls = []

    def sneak(session: Session) -> None:
        calls.append(1)
        session.execute(sa.update(Account).values(balance=7))

    with pytest.raises(ReadOnlyTransactionError):
        schema_db.transactional(read_only=True, retry=3).run(sneak)
    assert calls == [1]


async def test_async_drivers_refuse_read_only_writes_the_same_way(
    async_db: AsyncDatabase,
) -> None:
    await _async_schema(async_db)
    with pytest.raises(ReadOnlyTransactionError):
        async with async_db.transaction(read_only=True) as session:
            await session.execute(sa.update(Account).values(balance=7))
    with pytest.raises(ReadOnlyTransactionError):
        async with async_db.transaction(read_only=True) as session:
            session.add(Account(email="b@example.com"))
    async with async_db.session() as session:
        assert list(await session.scalars(sa.select(Account.email))) == ["a@example.com"]


TOO_BIG = 2**64  # past every integer column: sqlite3 itself refuses to bind it


def test_an_integer_past_64_bits_raises_database_error_and_writes_nothing(
    schema_db: Database,
) -> None:
    writes: dict[str, Callable[[Session], object]] = {
        "raw SQL": lambda session: session.execute(
            sa.text("UPDATE accounts SET balance = :b"), {"b": TOO_BIG}
        ),
        "Core": lambda session: session.execute(sa.update(Account).values(balance=TOO_BIG)),
        "ORM flush": lambda session: session.add(Account(email="c@example.com", balance=TOO_BIG)),
        "executemany": lambda session: session.execute(
            sa.insert(Account), [{"email": "d@example.com"}, {"email": "e", "balance": TOO_BIG}]
        ),
    }
    for name, write in writes.items():
        with pytest.raises(DatabaseError) as caught:
            with schema_db.transaction() as session:
                session.add(Account(email="b@example.com", balance=1))
                session.flush()
                write(session)
        assert str(TOO_BIG) not in str(caught.value), name
        with schema_db.session() as session:  # the whole transaction rolled back
            assert list(session.scalars(sa.select(Account.email))) == ["a@example.com"], name
    with pytest.raises(DatabaseError):
        schema_db.sql("UPDATE accounts SET balance = :b", b=TOO_BIG)
    assert _balances(schema_db) == [5]


def test_a_text_that_is_no_number_is_refused_without_showing_it(schema_db: Database) -> None:
    # PostgreSQL refuses it itself, quoting the text: dalkit's error does not
    secret = "tok_4f9a8c"  # a value written may be a secret: dalkit's refusal never shows it
    for value in (secret, f" {secret} "):
        with pytest.raises(DatabaseError) as caught:
            with schema_db.transaction() as session:
                session.execute(sa.update(Account).values(balance=value))
        assert secret not in str(caught.value)
    assert _balances(schema_db) == [5]


async def test_async_drivers_refuse_an_integer_past_64_bits_the_same_way(
    async_db: AsyncDatabase,
) -> None:
    await _async_schema(async_db)
    with pytest.raises(DatabaseError):
        async with async_db.transaction() as session:
            session.add(Account(email="b@example.com"))
            await session.flush()
            await session.execute(sa.update(Account).values(balance=TOO_BIG))
    with pytest.raises(DatabaseError):
        await async_db.sql("UPDATE accounts SET balance = :b", b=TOO_BIG)
    async with async_db.session() as session:
        assert list(await session.scalars(sa.select(Account.email))) == ["a@example.com"]
        assert list(await session.scalars(sa.select(Account.balance))) == [0]


def test_every_dalkit_error_is_drawn_in_the_tree_of_dalkit_errors() -> None:
    import importlib
    import inspect
    import pkgutil

    import dalkit
    import dalkit.errors

    drawn = set((dalkit.errors.__doc__ or "").replace(",", " ").split())
    missing = []
    for info in pkgutil.walk_packages(dalkit.__path__, "dalkit."):
        if info.name.endswith(("__main__", "testing.plugin")):
            continue  # a program that runs on import; a pytest plugin, loaded already
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            is_ours = issubclass(cls, dalkit.errors.DalkitError) and cls.__module__ == info.name
            if is_ours and name not in drawn:
                missing.append(f"{info.name}.{name}")
    assert not missing, f"draw these in dalkit/errors.py's tree: {missing}"
