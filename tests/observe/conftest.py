"""Fixtures for the observe tests: the plugin's databases with the test tables and rows, and an
observer installed on them directly (until Database takes the options itself)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.observe import Observer, install

from .models import Base, seed_rows


@pytest.fixture
def seeded_db(db: Database) -> Database:
    db.create_all(Base.metadata)
    with db.session() as session:
        session.add_all(seed_rows())
    return db


@pytest.fixture
def observer(seeded_db: Database) -> Iterator[Observer]:
    """Query stats on, N+1 detection raising; removed after the test."""
    observer = install(seeded_db.engine, {"nplusone": "raise"})
    try:
        yield observer
    finally:
        observer.uninstall()


@pytest.fixture
async def seeded_async_db(async_db: AsyncDatabase) -> AsyncDatabase:
    await async_db.create_all(Base.metadata)
    async with async_db.session() as session:
        session.add_all(seed_rows())
    return async_db


@pytest.fixture
async def async_observer(seeded_async_db: AsyncDatabase) -> AsyncIterator[Observer]:
    observer = install(seeded_async_db.engine, {"nplusone": "raise"})
    try:
        yield observer
    finally:
        observer.uninstall()


class PostgresDatabases:
    """Makes a Database (psycopg) or an AsyncDatabase (asyncpg) on the test's PostgreSQL
    database, with the options given; ``url`` is that database's URL for the driver."""

    def __init__(self, url: str, driver: str) -> None:
        self.url = url
        self.kind = AsyncDatabase if driver == "asyncpg" else Database
        self.made: list[Database | AsyncDatabase] = []

    def __call__(self, **options: Any) -> Database | AsyncDatabase:
        database = self.kind(self.url, **options)
        self.made.append(database)
        return database


@pytest.fixture(params=["psycopg", "asyncpg"])
async def pg_databases(
    request: pytest.FixtureRequest, postgres_database_url: str
) -> AsyncIterator[PostgresDatabases]:
    """Each test runs with psycopg's sync Database and asyncpg's AsyncDatabase; each one made
    is disposed after it."""
    url = sa.make_url(postgres_database_url).set(drivername=f"postgresql+{request.param}")
    databases = PostgresDatabases(url.render_as_string(hide_password=False), request.param)
    try:
        yield databases
    finally:
        for database in databases.made:
            disposed = database.dispose()
            if inspect.isawaitable(disposed):
                await disposed
