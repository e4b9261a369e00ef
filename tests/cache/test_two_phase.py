"""Two-phase commits invalidate too: ``Session(twophase=True)``, ``begin_twophase()`` and the
recovery of a transaction prepared elsewhere (``commit_prepared(..., recover=True)``), sync and
async, psycopg and asyncpg; a two-phase rollback invalidates nothing. PostgreSQL only (SQLite
has no two-phase commit); psycopg ends them with ``tpc_commit()``, never ``do_commit``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, MemoryBackend, QueryCache, install

from .models import Author, Base, Book, book_table
from .test_async_api import titles as async_titles
from .test_async_api import warm as async_warm
from .test_write_paths import titles, warm

pytestmark = pytest.mark.parametrize(
    "db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)]
)


def _driverless(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _require_two_phase(url: sa.URL) -> None:
    with psycopg.connect(_driverless(url)) as connection:
        row = connection.execute("SHOW max_prepared_transactions").fetchone()
    if row is None or int(row[0]) == 0:  # dalkit's harness sets it; an external server may not
        pytest.skip("the server refuses PREPARE TRANSACTION (max_prepared_transactions = 0)")


def test_a_two_phase_session_commit_invalidates(db: Database, cache: QueryCache) -> None:
    _require_two_phase(db.engine.url)
    warm(db, cache)
    with Session(db.engine, twophase=True) as session:
        session.add(Book(id=3, title="c", author_id=1))
        session.commit()
    assert titles(db, cache) == ["a", "b", "c"]


def test_a_two_phase_connection_commit_invalidates_and_its_rollback_does_not(
    db: Database, cache: QueryCache
) -> None:
    _require_two_phase(db.engine.url)
    warm(db, cache)
    with db.engine.connect() as connection:
        transaction = connection.begin_twophase()
        connection.execute(sa.insert(book_table).values(id=3, title="c"))
        transaction.prepare()
        transaction.rollback()
    hits = cache.get_stats()["hits"]
    assert titles(db, cache) == ["a", "b"]
    assert cache.get_stats()["hits"] == hits + 1  # still cached
    with db.engine.connect() as connection:
        transaction = connection.begin_twophase()
        connection.execute(sa.update(book_table).where(book_table.c.id == 1).values(title="z"))
        transaction.prepare()
        transaction.commit()
    assert titles(db, cache) == ["b", "z"]


def test_committing_a_transaction_prepared_elsewhere_invalidates_everything(
    db: Database, cache: QueryCache
) -> None:
    _require_two_phase(db.engine.url)
    warm(db, cache)
    xid = f"dalkit-{uuid.uuid4().hex}"
    # prepared by a connection the cache never saw, which then goes away (as in a crash)
    prepared = psycopg.connect(_driverless(db.engine.url))
    prepared.tpc_begin(xid)
    prepared.execute("INSERT INTO cache_book (id, title) VALUES (3, 'c')")
    prepared.tpc_prepare()
    prepared.close()
    assert titles(db, cache) == ["a", "b"]  # not committed yet
    with db.engine.connect() as connection:
        connection.commit_prepared(xid, recover=True)
    assert titles(db, cache) == ["a", "b", "c"]


async def test_an_async_two_phase_session_commit_invalidates_on_asyncpg(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    _require_two_phase(async_db.engine.url)
    await async_warm(async_db, async_cache)
    async with AsyncSession(async_db.engine, twophase=True) as session:
        session.add(Book(id=3, title="c"))
        await session.commit()
    assert await async_titles(async_db, async_cache) == ["a", "b", "c"]


@pytest.fixture
async def psycopg_async_db(async_db_url: str) -> AsyncIterator[AsyncDatabase]:
    database = AsyncDatabase(sa.make_url(async_db_url).set(drivername="postgresql+psycopg"))
    try:
        yield database
    finally:
        await database.dispose()


async def test_an_async_two_phase_session_commit_invalidates_on_psycopg(
    psycopg_async_db: AsyncDatabase,
) -> None:
    db = psycopg_async_db
    _require_two_phase(db.engine.url)
    await db.create_all(Base.metadata)
    async with db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
    cache = AsyncQueryCache(MemoryBackend(max_entries=100))
    install(db, cache)
    await async_warm(db, cache)
    async with AsyncSession(db.engine, twophase=True) as session:
        session.add(Book(id=2, title="b"))
        await session.commit()
    assert await async_titles(db, cache) == ["a", "b"]
