"""A cache-installed PostgreSQL database keeps its request path free of engine events (its write
capture is a statement hook and a transaction-end hook on the dialect), and still invalidates
writes made outside dalkit's transactions after their COMMIT, on psycopg and asyncpg alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, MemoryBackend, QueryCache, install

from .models import Author, Base, Book, book_table

pytestmark = pytest.mark.postgres


def _url(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def cached(postgres_database_url: str) -> Iterator[tuple[Database, QueryCache]]:
    """A psycopg database with the cache's tables and a memory cache installed."""
    # N+1 detection, which the test plugin turns on, is off by default and listens to BEGIN
    db = Database(_url(postgres_database_url, "postgresql+psycopg"), nplusone="off")
    try:
        db.create_all(Base.metadata)
        yield db, install(db, QueryCache(MemoryBackend(max_entries=100)))
    finally:
        db.dispose()


def _titles(db: Database, cache: QueryCache) -> list[str]:
    with db.transaction() as session:
        return sorted(cache.cached(session, sa.select(Book.title)).scalars().all())


async def _async_titles(db: AsyncDatabase, cache: AsyncQueryCache) -> list[str]:
    async with db.transaction() as session:
        result = await cache.cached(session, sa.select(Book.title))
        return sorted(result.scalars().all())


def test_a_cached_sync_database_dispatches_no_engine_event(
    cached: tuple[Database, QueryCache],
) -> None:
    db, cache = cached
    with db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
        assert not db.engine._has_events
    assert _titles(db, cache) == ["a"]
    with db.transaction(read_only=True) as session:
        assert cache.cached(session, sa.select(Book.title)).scalars().all() == ["a"]
        assert session.get(Author, 1) is not None
        assert not db.engine._has_events
    with db.transaction() as session:
        session.execute(sa.update(Book).values(title="b"))
        assert not db.engine._has_events
    assert not db.engine._has_events
    assert _titles(db, cache) == ["b"]


async def test_a_cached_async_database_dispatches_no_engine_event(
    postgres_database_url: str,
) -> None:
    db = AsyncDatabase(_url(postgres_database_url, "postgresql+asyncpg"), nplusone="off")
    engine = db.engine.sync_engine
    try:
        await db.create_all(Base.metadata)
        cache = install(db, AsyncQueryCache(MemoryBackend(max_entries=100)))
        async with db.transaction() as session:
            session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
            assert not engine._has_events
        assert await _async_titles(db, cache) == ["a"]
        async with db.transaction(read_only=True) as session:
            result = await cache.cached(session, sa.select(Book.title))
            assert result.scalars().all() == ["a"]
            assert not engine._has_events
        async with db.transaction() as session:
            await session.execute(sa.update(Book).values(title="b"))
            assert not engine._has_events
        assert not engine._has_events
        assert await _async_titles(db, cache) == ["b"]
    finally:
        await db.dispose()


async def test_async_writes_outside_dalkit_invalidate_after_commit_and_not_on_rollback(
    postgres_database_url: str,
) -> None:
    db = AsyncDatabase(_url(postgres_database_url, "postgresql+asyncpg"), nplusone="off")
    try:
        await db.create_all(Base.metadata)
        cache = install(db, AsyncQueryCache(MemoryBackend(max_entries=100)))
        async with db.transaction() as session:
            session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
        assert await _async_titles(db, cache) == ["a"]
        async with db.engine.connect() as connection:
            await connection.execute(book_table.insert().values(id=2, title="b", author_id=1))
            await connection.rollback()
            hits = cache.get_stats()["hits"]
            assert await _async_titles(db, cache) == ["a"]  # nothing to invalidate
            assert cache.get_stats()["hits"] == hits + 1
            await connection.execute(book_table.insert().values(id=3, title="c", author_id=1))
            await connection.commit()  # commit as you go: bumped now, not at check-in
            assert await _async_titles(db, cache) == ["a", "c"]
        async with AsyncSession(db.engine) as bare:
            bare.add(Book(id=4, title="d", author_id=1))
            await bare.commit()
        assert await _async_titles(db, cache) == ["a", "c", "d"]
        assert not db.engine.sync_engine._has_events
    finally:
        await db.dispose()


def test_a_bare_session_commit_invalidates_and_a_closed_one_forgets_its_writes(
    cached: tuple[Database, QueryCache],
) -> None:
    db, cache = cached
    with db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
    assert _titles(db, cache) == ["a"]
    with Session(db.engine) as bare:
        bare.add(Book(id=2, title="b", author_id=1))
        bare.flush()
    # closed without COMMIT: the pool's reset rolled back and the write is forgotten
    hits = cache.get_stats()["hits"]
    assert _titles(db, cache) == ["a"]
    assert cache.get_stats()["hits"] == hits + 1
    with Session(db.engine) as bare:
        bare.add(Book(id=3, title="c", author_id=1))
        bare.commit()
    assert _titles(db, cache) == ["a", "c"]
