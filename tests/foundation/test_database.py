"""Database and AsyncDatabase: sessions, Core connections, driver access, SQLite done properly."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database

from .models import Account, Base


def test_a_session_commits_when_the_block_succeeds(db: Database) -> None:
    Base.metadata.create_all(db.engine)
    with db.session() as session:
        session.add(Account(email="a@example.com", balance=10))
    with db.session() as session:
        assert session.scalars(sa.select(Account.email)).all() == ["a@example.com"]


def test_a_session_rolls_back_when_the_block_raises(db: Database) -> None:
    Base.metadata.create_all(db.engine)
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(Account(email="a@example.com"))
        session.flush()
        raise RuntimeError("boom")
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0


async def test_an_async_session_commits_and_rolls_back(async_db: AsyncDatabase) -> None:
    async with async_db.connection() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with async_db.session() as session:
        session.add(Account(email="kept@example.com"))
    with pytest.raises(RuntimeError):
        async with async_db.session() as session:
            session.add(Account(email="dropped@example.com"))
            await session.flush()
            raise RuntimeError("boom")
    async with async_db.session() as session:
        emails = (await session.scalars(sa.select(Account.email))).all()
    assert emails == ["kept@example.com"]


def test_a_core_connection_commits_on_success(db: Database) -> None:
    # not "notes": an audited model of another test module has that table, and raw SQL on an
    # engine that created none of the audited models' tables is checked against all of them
    with db.connection() as connection:
        connection.exec_driver_sql("CREATE TABLE core_notes (body TEXT)")
        connection.execute(sa.text("INSERT INTO core_notes VALUES (:body)"), {"body": "hello"})
    with db.connection() as connection:
        assert connection.exec_driver_sql("SELECT body FROM core_notes").scalar_one() == "hello"


def test_a_failed_transaction_that_created_a_table_leaves_no_table(db: Database) -> None:
    with pytest.raises(RuntimeError), db.connection() as connection:
        connection.exec_driver_sql("CREATE TABLE ghost (id INTEGER)")
        connection.exec_driver_sql("INSERT INTO ghost VALUES (1)")
        raise RuntimeError("boom")
    assert "ghost" not in sa.inspect(db.engine).get_table_names()


async def test_an_async_failed_transaction_leaves_no_table(async_db: AsyncDatabase) -> None:
    with pytest.raises(RuntimeError):
        async with async_db.connection() as connection:
            await connection.exec_driver_sql("CREATE TABLE ghost (id INTEGER)")
            raise RuntimeError("boom")
    async with async_db.connection() as connection:
        tables = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert "ghost" not in tables


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(sqlite_url: str) -> None:
    db = Database(sqlite_url, sqlite_busy_timeout_ms=1234)
    try:
        with db.connection() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    finally:
        db.dispose()


def test_an_in_memory_sqlite_database_keeps_its_tables_across_sessions() -> None:
    with Database("sqlite://") as db:
        Base.metadata.create_all(db.engine)
        with db.session() as session:
            session.add(Account(email="m@example.com"))
        with db.session() as session:
            assert session.scalar(sa.select(Account.email)) == "m@example.com"


def test_the_driver_connection_is_the_drivers_own(db: Database, db_backend: str) -> None:
    with db.driver_connection() as raw:
        module = type(raw).__module__
        assert module.startswith("psycopg" if db_backend == "postgres" else "sqlite3")
        cursor = raw.cursor()
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone()[0] == 42
        cursor.close()


async def test_the_async_driver_connection_is_the_drivers_own(
    async_db: AsyncDatabase, db_backend: str
) -> None:
    async with async_db.driver_connection() as raw:
        if db_backend == "postgres":
            assert type(raw).__module__.startswith("asyncpg")
            assert await raw.fetchval("SELECT 41 + 1") == 42
        else:
            assert type(raw).__module__.startswith("aiosqlite")
            async with raw.execute("SELECT 41 + 1") as cursor:
                assert (await cursor.fetchone())[0] == 42


def test_the_init_hook_runs_on_every_new_connection(db_url: str) -> None:
    seen: list[Any] = []
    with Database(db_url, init=seen.append, pool_size=2) as db:
        with db.engine.connect() as first, db.engine.connect() as second:
            assert first is not second
        assert len(seen) == 2
        assert all(type(c).__module__.split(".")[0] in ("psycopg", "sqlite3") for c in seen)


@pytest.mark.postgres
async def test_an_async_init_hook_can_register_asyncpg_codecs(postgres_database_url: str) -> None:
    import json

    async def init(connection: Any) -> None:
        # the seeds' use: decode json as Python objects at the driver level
        await connection.set_type_codec(
            "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    async with AsyncDatabase(postgres_database_url, init=init) as db:
        async with db.driver_connection() as raw:
            assert await raw.fetchval("""SELECT '{"a": [1, 2]}'::json""") == {"a": [1, 2]}


@pytest.mark.postgres
def test_statement_timeout_and_application_name_reach_the_server(
    postgres_database_url: str,
) -> None:
    with Database(postgres_database_url, statement_timeout_ms=1500, application_name="t1") as db:
        with db.connection() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
            assert connection.exec_driver_sql("SHOW application_name").scalar() == "t1"


@pytest.mark.postgres
async def test_async_statement_timeout_reaches_the_server(postgres_database_url: str) -> None:
    async with AsyncDatabase(postgres_database_url, statement_timeout_ms=1500) as db:
        async with db.connection() as connection:
            value = (await connection.exec_driver_sql("SHOW statement_timeout")).scalar()
    assert value == "1500ms"


def test_the_database_is_a_context_manager_that_disposes(db_url: str) -> None:
    with Database(db_url) as db:
        with db.connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        assert db.pool_stats()["pool_available"] == 1
    assert db.pool_stats()["pool_available"] == 0
