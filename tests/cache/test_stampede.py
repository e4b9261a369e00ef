"""A stampede on a cold key runs the query once per process: 50 threads, and 50 tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, QueryCache

from .models import Book

CALLERS = 50


def slow_book_selects(engine: Any) -> list[str]:
    """Count the SELECTs of cache_book, each made slow enough for every caller to arrive."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "cache_book" in statement:
            seen.append(statement)
            time.sleep(0.3)

    return seen


def test_fifty_threads_on_a_cold_key_run_one_query(db: Database, cache: QueryCache) -> None:
    queries = slow_book_selects(db.engine)
    barrier = threading.Barrier(CALLERS)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            barrier.wait()
            with db.transaction() as session:
                rows = cache.cached(session, sa.select(Book.title).order_by(Book.title))
                results.append(list(rows.scalars()))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=read) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [["a", "b"]] * CALLERS
    assert len(queries) == 1
    assert cache.get_stats()["hits"] == CALLERS - 1


async def test_fifty_tasks_on_a_cold_key_run_one_query(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    queries = slow_book_selects(async_db.engine.sync_engine)

    async def read() -> list[str]:
        async with async_db.transaction() as session:
            rows = await async_cache.cached(session, sa.select(Book.title).order_by(Book.title))
            return list(rows.scalars())

    results = await asyncio.gather(*(read() for _ in range(CALLERS)))
    assert results == [["a", "b"]] * CALLERS
    assert len(queries) == 1
    assert async_cache.get_stats()["hits"] == CALLERS - 1
