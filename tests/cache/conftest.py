"""Fixtures of the cache tests: a database of each backend with a cache of each kind
installed (memory, and Redis under a prefix private to the test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from dalkit import AsyncDatabase, AsyncRedisManager, Database, RedisManager
from dalkit.cache import (
    AsyncQueryCache,
    AsyncRedisBackend,
    MemoryBackend,
    QueryCache,
    RedisBackend,
    install,
)

from .models import Author, Base, Book


@pytest.fixture(params=["memory", "redis"])
def cache_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def cache(db: Database, cache_kind: str, request: pytest.FixtureRequest) -> Iterator[QueryCache]:
    """``db`` with its tables, one author and two books, and a cache installed."""
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a"), Book(id=2, title="b")]))
    if cache_kind == "memory":
        query_cache = QueryCache(MemoryBackend(max_entries=1000))
        install(db, query_cache)
        yield query_cache
        return
    manager = RedisManager(request.getfixturevalue("redis_url"))
    backend = RedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    query_cache = QueryCache(backend)
    install(db, query_cache)
    try:
        yield query_cache
    finally:
        backend.close()
        manager.close()


@pytest.fixture
async def async_cache(
    async_db: AsyncDatabase, cache_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncQueryCache]:
    await async_db.create_all(Base.metadata)
    async with async_db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a"), Book(id=2, title="b")]))
    if cache_kind == "memory":
        query_cache = AsyncQueryCache(MemoryBackend(max_entries=1000))
        install(async_db, query_cache)
        yield query_cache
        return
    manager = AsyncRedisManager(request.getfixturevalue("redis_url"))
    backend = AsyncRedisBackend(manager, prefix=f"t{uuid.uuid4().hex[:10]}")
    query_cache = AsyncQueryCache(backend)
    install(async_db, query_cache)
    try:
        yield query_cache
    finally:
        await backend.close()
        await manager.close()
