"""Fixtures for the transaction tests: PostgreSQL-only databases, and a superuser connection
that can end other backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, Database


def _with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def pg_db(postgres_database_url: str) -> Iterator[Database]:
    """A Database on a fresh PostgreSQL database (psycopg)."""
    database = Database(_with_driver(postgres_database_url, "postgresql+psycopg"))
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def pg_async_db(postgres_database_url: str) -> AsyncIterator[AsyncDatabase]:
    """An AsyncDatabase on a fresh PostgreSQL database (asyncpg)."""
    database = AsyncDatabase(_with_driver(postgres_database_url, "postgresql+asyncpg"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def pg_admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser connection in autocommit mode, outside any pool under test."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection
