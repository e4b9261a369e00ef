"""The optional cross-process stampede lock: processes (and databases) missing the same key run
its query once in total; a lock held too long, or a Redis that is down, never fails a read."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, AsyncRedisManager, Database, RedisManager
from dalkit.cache import (
    AsyncQueryCache,
    AsyncRedisBackend,
    CacheConfigurationError,
    QueryCache,
    RedisBackend,
    install,
)
from dalkit.testing._server import free_port

from . import stampede_worker
from .stampede_worker import SETUP, STATEMENT, counting

PROCESSES = 4


@pytest.fixture
def counted_url(postgres_database_url: str) -> str:
    """A fresh PostgreSQL database with ``stampede_tick()``, the query's slow function."""
    db = Database(postgres_database_url)
    with db.engine.begin() as connection:
        for statement in SETUP:
            connection.exec_driver_sql(statement)
    db.dispose()
    return postgres_database_url


@pytest.fixture
def prefix() -> str:
    return f"lock{uuid.uuid4().hex[:10]}"


def locked_cache(db: Database, redis_url: str, prefix: str, **options: Any) -> QueryCache:
    backend = RedisBackend(RedisManager(redis_url), prefix=prefix, stampede_lock=True, **options)
    return install(db, QueryCache(backend))


@pytest.mark.slow
def test_four_processes_of_ten_threads_on_a_cold_key_run_the_query_once_in_total(
    counted_url: str, redis_url: str, prefix: str
) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    out = context.Queue()
    processes = [
        context.Process(
            target=stampede_worker.run, args=(counted_url, redis_url, prefix, start, out)
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert [errors for _values, errors, _stats, _runs in reports] == [[]] * PROCESSES
    values = [value for process_values, *_rest in reports for value in process_values]
    assert len(values) == PROCESSES * stampede_worker.THREADS
    assert len(set(values)) == 1  # one run's result
    assert sum(stats["misses"] for _values, _errors, stats, _runs in reports) == 1
    assert sum(runs for *_rest, runs in reports) == 1


@pytest.fixture
def databases(counted_url: str) -> Iterator[list[Database]]:
    """Two databases on the same server: two caches with flights of their own, like two
    processes."""
    dbs = [Database(counted_url), Database(counted_url)]
    yield dbs
    for db in dbs:
        db.dispose()


def test_two_caches_missing_the_same_key_run_the_query_once(
    databases: list[Database], redis_url: str, prefix: str
) -> None:
    caches = [locked_cache(db, redis_url, prefix) for db in databases]
    runs = [counting(db.engine) for db in databases]
    values: list[int] = []

    def read(db: Database, cache: QueryCache) -> None:
        with db.transaction() as session:
            values.append(int(cache.cached(session, STATEMENT).scalar_one()))

    threads = [
        threading.Thread(target=read, args=(db, cache))
        for db, cache in zip(databases, caches, strict=True)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(values) == 6
    assert len(set(values)) == 1
    assert sum(map(len, runs)) == 1
    assert sum(cache.get_stats()["misses"] for cache in caches) == 1
    for cache in caches:
        cache.backend.close()


def test_a_lock_held_past_the_timeout_is_given_up_and_the_query_runs(
    databases: list[Database], redis_url: str, prefix: str
) -> None:
    db = databases[0]
    cache = locked_cache(db, redis_url, prefix, lock_timeout=0.3)
    key, _tables = cache.describe(STATEMENT, None, None)
    holder = RedisManager(redis_url)
    stuck = holder.client.lock(cache.backend.lock_key(key), timeout=60)
    assert stuck.acquire(blocking=False)
    runs = counting(db.engine)
    with db.transaction() as session:
        assert cache.cached(session, STATEMENT).scalar_one() > 0
    assert len(runs) == 1
    assert stuck.owned()  # the reader that gave up left the other holder's lock alone
    stuck.release()
    holder.close()
    cache.backend.close()


def test_an_unreachable_redis_takes_no_lock_and_raises_nothing() -> None:
    manager = RedisManager(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    backend = RedisBackend(manager, stampede_lock=True)
    assert backend.lock("dalkit:cache:e:any") is None
    backend.close()
    manager.close()


def test_without_the_option_no_lock_is_taken(redis_url: str) -> None:
    manager = RedisManager(redis_url)
    backend = RedisBackend(manager)
    assert backend.lock("dalkit:cache:e:any") is None
    backend.close()
    manager.close()


def test_a_lock_timeout_must_be_positive(redis_url: str) -> None:
    manager = RedisManager(redis_url)
    with pytest.raises(CacheConfigurationError, match="lock_timeout"):
        RedisBackend(manager, stampede_lock=True, lock_timeout=0)
    manager.close()


async def test_two_async_caches_missing_the_same_key_run_the_query_once(
    counted_url: str, redis_url: str, prefix: str
) -> None:
    url = make_url(counted_url).set(drivername="postgresql+asyncpg")
    dbs = [AsyncDatabase(url.render_as_string(hide_password=False)) for _ in range(2)]
    managers = [AsyncRedisManager(redis_url) for _ in dbs]
    caches = [
        install(db, AsyncQueryCache(AsyncRedisBackend(m, prefix=prefix, stampede_lock=True)))
        for db, m in zip(dbs, managers, strict=True)
    ]
    runs = [counting(db.engine.sync_engine) for db in dbs]

    async def read(db: AsyncDatabase, cache: AsyncQueryCache) -> int:
        async with db.transaction() as session:
            return int((await cache.cached(session, STATEMENT)).scalar_one())

    values = await asyncio.gather(
        *(read(db, cache) for db, cache in zip(dbs, caches, strict=True) for _ in range(3))
    )
    assert len(values) == 6
    assert len(set(values)) == 1
    assert sum(map(len, runs)) == 1
    assert sum(cache.get_stats()["misses"] for cache in caches) == 1
    for db, cache, manager in zip(dbs, caches, managers, strict=True):
        await cache.backend.close()
        await manager.close()
        await db.dispose()
