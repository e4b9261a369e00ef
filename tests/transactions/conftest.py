"""Fixtures for the transaction tests: PostgreSQL-only databases, a superuser connection
that can end other backends, and the server's own log of the statements a database receives."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, Database
from dalkit.testing import PostgresServer

from .models import Item, create_all, create_all_async


def with_driver(url: str, driver: str) -> str:
    """``url`` with ``driver`` as its driver, its password kept (the tests connect with it)."""
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    """A Database on a fresh PostgreSQL database (psycopg)."""
    database = Database(with_driver(postgres_database_url, "postgresql+psycopg"))
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def pg_async_db(postgres_database_url: str) -> AsyncIterator[AsyncDatabase]:
    """An AsyncDatabase on a fresh PostgreSQL database (asyncpg)."""
    database = AsyncDatabase(with_driver(postgres_database_url, "postgresql+asyncpg"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser connection in autocommit mode, outside any pool under test."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


_STATEMENT = re.compile(r"LOG:\s+(?:statement|execute [^:]*):\s*(.*)$")


class StatementLog:
    """The statements the server logs for one database from now on (log_statement=all)."""

    def __init__(self, server: PostgresServer, admin_url: str, database: str) -> None:
        self._path = server.data_dir.parent / "server.log"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        self._start = 0

    def mark(self) -> None:
        self._start = self._path.stat().st_size

    def statements(self) -> list[str]:
        time.sleep(0.05)  # the server writes its log line after answering
        with Path(self._path).open("rb") as log:
            log.seek(self._start)
            text = log.read().decode(errors="replace")
        found = []
        for line in text.splitlines():
            match = _STATEMENT.search(line)
            if match:
                # asyncpg ends its own BEGIN with a semicolon
                words = match.group(1).split()
                found.append(words[0].rstrip(";").upper() if words else "")
        return found


@pytest.fixture
def statement_log(
    postgres_server: PostgresServer, postgres_url: str, postgres_database_url: str
) -> StatementLog:
    database = make_url(postgres_database_url).database
    assert database is not None
    return StatementLog(postgres_server, postgres_url, database)


@pytest.fixture
def pg(postgres_database_url: str, statement_log: StatementLog) -> Iterator[Database]:
    # N+1 detection off (the test plugin turns it on): while it counts, plain reads keep to the
    # session's connection, and these tests look at the statements of the default way
    db = Database(
        with_driver(postgres_database_url, "postgresql+psycopg"), pool_size=2, nplusone="off"
    )
    create_all(db)
    with db.transaction() as session:
        session.add(Item(id=1, name="one"))
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
async def apg(
    postgres_database_url: str, statement_log: StatementLog
) -> AsyncIterator[AsyncDatabase]:
    db = AsyncDatabase(
        with_driver(postgres_database_url, "postgresql+asyncpg"), pool_size=2, nplusone="off"
    )
    await create_all_async(db)
    async with db.transaction() as session:
        session.add(Item(id=1, name="one"))
    try:
        yield db
    finally:
        await db.dispose()
