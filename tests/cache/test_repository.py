"""Repositories with ``cache_ttl`` serve their reads from the cache, attach what they serve
to the caller's session, and see every write at once (sync and async; SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dalkit import AsyncDatabase, AsyncRepository, Database, Repository
from dalkit.cache import AsyncQueryCache, QueryCache

from .models import Book


class BookRepository(Repository[Book]):
    cache_ttl = 60
    cursor_secret = "cache-tests-cursor-secret"


class AsyncBookRepository(AsyncRepository[Book]):
    cache_ttl = 60


class UncachedBookRepository(Repository[Book]):
    pass


READS: dict[str, Callable[[Any], Any]] = {
    "get": lambda repo: repo.get(1).title,
    "get_many": lambda repo: [b.title for b in repo.get_many([2, 1])],
    "list": lambda repo: [b.title for b in repo.list(sort="title")],
    "find": lambda repo: [b.title for b in repo.find(title="a")],
    "first": lambda repo: repo.first(sort="-title").title,
    "count": lambda repo: repo.count(),
    "exists": lambda repo: repo.exists(title="b"),
    "paginate": lambda repo: [b.title for b in repo.paginate(per_page=1).items],
    "paginate_cursor": lambda repo: [b.title for b in repo.paginate_cursor(limit=1).items],
}


@pytest.mark.parametrize("method", list(READS))
def test_each_read_is_served_from_the_cache(db: Database, cache: QueryCache, method: str) -> None:
    def read() -> Any:
        with db.transaction() as session:
            return READS[method](BookRepository(session))

    first = read()
    read()  # SQLite stores only a transaction's first query: paginate needs a second round
    hits = cache.get_stats()["hits"]
    assert read() == first
    assert cache.get_stats()["hits"] > hits


def test_a_repository_without_cache_ttl_never_uses_the_cache(
    db: Database, cache: QueryCache
) -> None:
    for _ in range(2):
        with db.transaction() as session:
            UncachedBookRepository(session).list()
    assert cache.get_stats()["hits"] == cache.get_stats()["misses"] == 0


def test_an_entity_served_from_the_cache_flushes_an_update_when_changed(
    db: Database, cache: QueryCache
) -> None:
    for _ in range(2):
        with db.transaction() as session:
            BookRepository(session).get(1)
    with db.transaction() as session:
        hits = cache.get_stats()["hits"]
        book = BookRepository(session).get(1)
        assert cache.get_stats()["hits"] == hits + 1
        assert book in session
        book.title = "changed"
    with db.transaction() as session:
        assert [b.title for b in BookRepository(session).list(sort="title")] == ["b", "changed"]


def test_repository_writes_are_seen_by_the_next_read(db: Database, cache: QueryCache) -> None:
    def titles() -> list[str]:
        with db.transaction() as session:
            return [b.title for b in BookRepository(session).list(sort="title")]

    assert titles() == titles() == ["a", "b"]
    with db.transaction() as session:
        BookRepository(session).add(Book(id=3, title="c"))
    assert titles() == ["a", "b", "c"]
    with db.transaction() as session:
        BookRepository(session).update(3, title="d")
    assert titles() == ["a", "b", "d"]
    with db.transaction() as session:
        BookRepository(session).delete_where(title="d")
    assert titles() == ["a", "b"]


def test_bulk_insert_and_bulk_update_are_seen_by_the_next_read(
    db: Database, cache: QueryCache
) -> None:
    def titles() -> list[str]:
        with db.transaction() as session:
            return [b.title for b in BookRepository(session).list(sort="title")]

    assert titles() == titles() == ["a", "b"]
    with db.transaction() as session:
        BookRepository(session).bulk_insert([{"id": 4, "title": "e"}])
    assert titles() == ["a", "b", "e"]
    with db.transaction() as session:
        BookRepository(session).bulk_update([{"id": 4, "title": "f"}])
    assert titles() == ["a", "b", "f"]


async def test_the_async_repository_is_served_from_the_cache_and_sees_writes(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    async def run(read: Callable[[AsyncBookRepository], Awaitable[Any]]) -> Any:
        async with async_db.transaction() as session:
            return await read(AsyncBookRepository(session))

    async def titles(repo: AsyncBookRepository) -> list[str]:
        return [b.title for b in await repo.list(sort="title")]

    assert await run(titles) == await run(titles) == ["a", "b"]
    assert async_cache.get_stats()["hits"] == 1

    async def rename(repo: AsyncBookRepository) -> None:
        book = await repo.get(1)
        book.title = "z"

    await run(rename)
    assert await run(titles) == ["b", "z"]
