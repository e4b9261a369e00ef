"""A write transaction of a cache-installed database leaves no reference cycle behind: its
session is freed when the transaction ends, not by a later garbage collection (which, run every
few dozen writes, cost a cached write more than its invalidation did)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, QueryCache

from .models import Book


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_committed_write_frees_its_session_at_once(
    db: Database, cache: QueryCache, no_collector: None
) -> None:
    sessions = []
    for title in ("x", "y", "z"):
        with db.transaction() as session:
            session.execute(sa.update(Book).where(Book.id == 1).values(title=title))
            sessions.append(weakref.ref(session))
        del session
    assert [ref() for ref in sessions] == [None, None, None]
    with db.transaction() as session:
        assert cache.cached(session, sa.select(Book.title).where(Book.id == 1)).scalar() == "z"


async def test_an_async_committed_write_frees_its_session_at_once(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache, no_collector: None
) -> None:
    sessions = []
    for title in ("x", "y"):
        async with async_db.transaction() as session:
            await session.execute(sa.update(Book).where(Book.id == 1).values(title=title))
            sessions.append(weakref.ref(session))
        del session
    assert [ref() for ref in sessions] == [None, None]
    async with async_db.transaction() as session:
        result = await async_cache.cached(session, sa.select(Book.title).where(Book.id == 1))
        assert result.scalar() == "y"
