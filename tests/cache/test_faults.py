"""Redis down, partitioned or restarted: the application never sees an error, and no stale
entry is served once Redis is back (a real redis-server, stopped and started)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncRedisManager, Database, RedisManager
from dalkit.cache import AsyncQueryCache, AsyncRedisBackend, QueryCache, RedisBackend, install
from dalkit.cache.errors import CacheConfigurationError
from dalkit.testing._server import free_port
from dalkit.testing.redis import RedisServer

from .models import Base, Book
from .proxy import CuttableProxy


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, restartable on the same port."""
    with RedisServer(port=free_port()) as redis_server:
        yield redis_server


def seeded(url: str) -> Database:
    db = Database(url)
    db.create_all(Base.metadata)
    with db.transaction() as session:
        if session.get(Book, 1) is None:
            session.add_all([Book(id=1, title="a"), Book(id=2, title="b")])
    return db


def redis_cache(db: Database, url: str, prefix: str) -> QueryCache:
    backend = RedisBackend(RedisManager(url, socket_timeout_s=0.5), prefix=prefix)
    return install(db, QueryCache(backend, retry_interval=0.0, warn_interval=3600))


def titles(db: Database, cache: QueryCache) -> list[str]:
    with db.transaction() as session:
        return sorted(cache.cached(session, sa.select(Book.title)).scalars().all())


def async_redis_cache(db: AsyncDatabase, url: str) -> AsyncQueryCache:
    """An AsyncQueryCache on its own Redis backend and manager, closed by `close_async`."""
    manager = AsyncRedisManager(url, socket_timeout_s=0.5)
    backend = AsyncRedisBackend(manager, prefix=f"p{uuid.uuid4().hex[:8]}")
    return install(db, AsyncQueryCache(backend, retry_interval=0.0, warn_interval=3600))


async def close_async(cache: AsyncQueryCache) -> None:
    await cache.backend.close()
    await cache.backend.manager.close()


async def async_titles(db: AsyncDatabase, cache: AsyncQueryCache) -> list[str]:
    async with db.transaction() as session:
        return sorted((await cache.cached(session, sa.select(Book.title))).scalars().all())


@pytest.fixture
def proxied_sync(
    db_url: str, server: RedisServer
) -> Iterator[tuple[Database, QueryCache, CuttableProxy]]:
    """The seeded database, with a cache on ``server`` through a proxy."""
    with CuttableProxy("127.0.0.1", server.port) as proxy:
        db = seeded(db_url)
        yield db, redis_cache(db, proxy.url, f"p{uuid.uuid4().hex[:8]}"), proxy
        db.dispose()


@pytest.fixture
async def proxied(
    db_url: str, async_db_url: str, server: RedisServer
) -> AsyncIterator[tuple[AsyncDatabase, AsyncQueryCache, CuttableProxy]]:
    """The seeded database (async), with a cache on ``server`` through a proxy."""
    seeded(db_url).dispose()  # the same database, through its async driver
    db = AsyncDatabase(async_db_url)
    with CuttableProxy("127.0.0.1", server.port) as proxy:
        cache = async_redis_cache(db, proxy.url)
        yield db, cache, proxy
        await close_async(cache)
    await db.dispose()


@pytest.mark.slow
def test_redis_killed_during_a_mixed_workload_causes_no_application_error(
    db_url: str, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    db = seeded(db_url)
    cache = redis_cache(db, server.url, "mixed")
    expected = "a"
    served_while_down = 0
    with caplog.at_level(logging.WARNING, logger="dalkit.cache"):
        for i in range(240):
            if i == 80:
                server.stop()
            if i == 160:
                server.start()
            if i % 6 == 0:
                expected = f"t{i:03d}"
                db.sql("UPDATE cache_book SET title = :title WHERE id = 1", title=expected)
            assert titles(db, cache) == sorted([expected, "b"])  # never stale, never raises
            if 80 <= i < 160:
                served_while_down += 1
    stats = cache.get_stats()
    assert stats["errors"] > 0
    assert stats["pending"] == 0
    assert stats["hits"] > 0
    assert served_while_down == 80
    # rate-limited: one warning for the whole outage
    assert len([r for r in caplog.records if r.name == "dalkit.cache"]) == 1
    db.dispose()


def test_an_invalidation_missed_during_a_partition_is_applied_when_redis_is_back(
    db_url: str, server: RedisServer
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    with CuttableProxy("127.0.0.1", server.port) as proxy:
        writer_db = seeded(db_url)
        writer = redis_cache(writer_db, proxy.url, prefix)
        other_db = Database(db_url)  # another process's view: same Redis, same database
        other = redis_cache(other_db, server.url, prefix)
        assert titles(writer_db, writer) == titles(other_db, other) == ["a", "b"]
        assert titles(other_db, other) == ["a", "b"]  # cached, and the entry survives the cut
        proxy.cut()
        with writer_db.transaction() as session:
            session.add(Book(id=3, title="c"))  # committed: the invalidation cannot reach Redis
        assert writer.get_stats()["pending"] == 1
        assert titles(writer_db, writer) == ["a", "b", "c"]  # bypassed, not stale
        assert writer.get_stats()["bypasses"] >= 1
        proxy.restore()
        assert titles(writer_db, writer) == ["a", "b", "c"]  # the retry applied it first
        assert writer.get_stats()["pending"] == 0
        assert titles(other_db, other) == ["a", "b", "c"]
        writer_db.dispose()
        other_db.dispose()


def test_reads_bypass_the_cache_until_a_pending_invalidation_has_reached_redis(
    proxied_sync: tuple[Database, QueryCache, CuttableProxy], server: RedisServer
) -> None:
    db, cache, proxy = proxied_sync
    assert titles(db, cache) == titles(db, cache) == ["a", "b"]  # the second one a hit
    proxy.cut()
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")  # returned; the bump pending
    proxy.restore()
    with redis.Redis.from_url(server.url) as admin:
        admin.client_pause(400, all=False)  # the retry's MSET waits, reads go on
        retry = threading.Thread(target=cache.invalidate, args=((),))
        retry.start()
        time.sleep(0.1)
        try:  # was served ["a", "b"]: the retry had taken the tables off pending
            assert titles(db, cache) == ["b", "z"]
        finally:
            retry.join()
    assert cache.get_stats()["pending"] == 0


async def test_a_task_reads_no_stale_entry_while_another_retries_an_invalidation(
    proxied: tuple[AsyncDatabase, AsyncQueryCache, CuttableProxy], server: RedisServer
) -> None:
    db, cache, proxy = proxied
    read = functools.partial(async_titles, db, cache)
    assert await read() == await read() == ["a", "b"]
    proxy.cut()
    await db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")
    proxy.restore()
    with redis.Redis.from_url(server.url) as admin:
        admin.client_pause(400, all=False)
        retry = asyncio.create_task(cache.invalidate(()))
        await asyncio.sleep(0.1)
        try:
            assert await read() == ["b", "z"]
        finally:
            await retry


async def test_a_request_cancelled_during_its_invalidation_leaves_no_stale_entry(
    db_url: str, async_db_url: str, server: RedisServer
) -> None:
    seeded(db_url).dispose()
    db = AsyncDatabase(async_db_url)
    manager = AsyncRedisManager(server.url)
    backend = AsyncRedisBackend(manager, prefix=f"p{uuid.uuid4().hex[:8]}")
    cache = install(db, AsyncQueryCache(backend, retry_interval=0.0, warn_interval=3600))

    async def read() -> list[str]:
        async with db.transaction() as session:
            return sorted((await cache.cached(session, sa.select(Book.title))).scalars().all())

    async def rename() -> None:
        async with db.transaction() as session:
            book = await session.get(Book, 1)
            assert book is not None
            book.title = "z"

    assert await read() == await read() == ["a", "b"]
    with redis.Redis.from_url(server.url) as admin:
        admin.client_pause(10_000, all=False)  # a slow Redis: the commit's MSET waits
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(rename(), 1.0)  # the request's deadline, after COMMIT
        finally:
            admin.client_unpause()
    assert await db.sql("SELECT title FROM cache_book WHERE id = 1") == [{"title": "z"}]
    assert await read() == ["b", "z"]  # was ["a", "b"] until the TTL: the invalidation lost
    await backend.close()
    await manager.close()
    await db.dispose()


def test_a_restarted_redis_serves_no_stale_entry(db_url: str, server: RedisServer) -> None:
    db = seeded(db_url)
    cache = redis_cache(db, server.url, "restart")
    assert titles(db, cache) == titles(db, cache) == ["a", "b"]
    server.stop()
    db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")  # invalidation pending
    server.start()
    assert titles(db, cache) == ["b", "z"]
    assert titles(db, cache) == ["b", "z"]
    assert cache.get_stats()["hits"] >= 2
    db.dispose()


def test_an_entry_tagged_before_a_restart_can_never_become_servable(server: RedisServer) -> None:
    backend = RedisBackend(RedisManager(server.url))
    tables = ("*", "cache_book")
    _, tokens = backend.fetch("dalkit:cache:e:k", tables)
    server.stop()
    server.start()  # every token is gone: new ones are random, never counters
    backend.store("dalkit:cache:e:k", tokens, b"old", 60)
    assert backend.fetch("dalkit:cache:e:k", tables)[0] is None
    backend.bump(tables)
    backend.store("dalkit:cache:e:k", tokens, b"old", 60)
    assert backend.fetch("dalkit:cache:e:k", tables)[0] is None
    backend.close()


def test_an_unreachable_redis_is_bypassed_with_a_counted_error() -> None:
    db = Database("sqlite://")
    db.create_all(Base.metadata)
    cache = redis_cache(db, f"redis://127.0.0.1:{free_port()}/0", "down")
    with db.transaction() as session:
        session.add(Book(id=1, title="a"))
    for _ in range(3):
        assert titles(db, cache) == ["a"]
    stats = cache.get_stats()
    assert stats["errors"] >= 3
    assert stats["hits"] == 0
    db.dispose()


def test_a_hung_redis_delays_one_read_not_each_read_and_commit_and_serves_nothing_stale(
    proxied_sync: tuple[Database, QueryCache, CuttableProxy],
) -> None:
    db, cache, proxy = proxied_sync
    assert titles(db, cache) == titles(db, cache) == ["a", "b"]
    proxy.hang()  # connections open, no reply: each command waits socket_timeout_s (0.5)
    try:
        for _ in range(4):
            assert titles(db, cache) == ["a", "b"]  # the first times out, then bypassed
        db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")  # the bump kept pending
        assert titles(db, cache) == ["b", "z"]
        waited_on = proxy.held
    finally:
        proxy.resume()
    # the first read's command, and at most one more should the 1 s pause run out on a slow
    # machine; before, each read and the commit sent theirs twice, each waiting the timeout
    assert 1 <= waited_on <= 2, waited_on
    assert cache.get_stats()["pending"] > 0  # the UPDATE's tables
    deadline = time.monotonic() + 10
    while cache.get_stats()["pending"] and time.monotonic() < deadline:
        assert titles(db, cache) == ["b", "z"]  # Redis answers again: never the old entry
        time.sleep(0.05)
    assert titles(db, cache) == titles(db, cache) == ["b", "z"]
    assert cache.get_stats()["hits"] >= 2  # served from Redis again


async def test_a_hung_redis_pauses_the_async_backend_too(
    proxied: tuple[AsyncDatabase, AsyncQueryCache, CuttableProxy],
) -> None:
    db, cache, proxy = proxied
    read = functools.partial(async_titles, db, cache)
    assert await read() == await read() == ["a", "b"]
    proxy.hang()
    try:
        for _ in range(4):
            assert await read() == ["a", "b"]
        await db.sql("UPDATE cache_book SET title = 'z' WHERE id = 1")
        assert await read() == ["b", "z"]
        waited_on = proxy.held
    finally:
        proxy.resume()
    assert 1 <= waited_on <= 2, waited_on  # as in the sync test
    deadline = time.monotonic() + 10
    while cache.get_stats()["pending"] and time.monotonic() < deadline:
        assert await read() == ["b", "z"]
        await asyncio.sleep(0.05)
    assert await read() == await read() == ["b", "z"]
    assert cache.get_stats()["hits"] >= 2


@pytest.mark.parametrize(("first", "longest"), [(-1.0, 5.0), (2.0, 1.0)])
def test_timeout_pauses_out_of_range_are_refused(first: float, longest: float) -> None:
    manager = RedisManager(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(CacheConfigurationError, match="timeout_pause"):
            RedisBackend(manager, timeout_pause=first, timeout_pause_max=longest)
    finally:
        manager.close()


def hang_on_the_query(engine: sa.Engine, proxy: CuttableProxy) -> None:
    """Make Redis hang (through ``proxy``) as the cached read's own query runs."""

    def hang(_c: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.startswith("SELECT cache_book.title"):
            proxy.hang()

    sa.event.listen(engine, "before_cursor_execute", hang)


def test_a_redis_hung_while_a_locked_miss_runs_keeps_it_waiting_once(
    db_url: str, server: RedisServer
) -> None:
    db = seeded(db_url)
    with CuttableProxy("127.0.0.1", server.port) as proxy:
        manager = RedisManager(proxy.url, socket_timeout_s=0.5)
        backend = RedisBackend(manager, prefix=f"p{uuid.uuid4().hex[:8]}", stampede_lock=True)
        cache = install(db, QueryCache(backend, warn_interval=3600))
        hang_on_the_query(db.engine, proxy)
        try:
            assert titles(db, cache) == ["a", "b"]
            waited_on = proxy.held
        finally:
            proxy.resume()
        backend.close()
        manager.close()
    # the entry's SET; the lock's release waited a second timeout before (2)
    assert waited_on == 1, waited_on
    assert cache.get_stats()["errors"] == 1
    db.dispose()


async def test_a_redis_hung_while_an_async_locked_miss_runs_keeps_it_waiting_once(
    db_url: str, async_db_url: str, server: RedisServer
) -> None:
    seeded(db_url).dispose()
    db = AsyncDatabase(async_db_url)
    with CuttableProxy("127.0.0.1", server.port) as proxy:
        manager = AsyncRedisManager(proxy.url, socket_timeout_s=0.5)
        backend = AsyncRedisBackend(manager, prefix=f"p{uuid.uuid4().hex[:8]}", stampede_lock=True)
        cache = install(db, AsyncQueryCache(backend, warn_interval=3600))
        hang_on_the_query(db.engine.sync_engine, proxy)
        try:
            assert await async_titles(db, cache) == ["a", "b"]
            waited_on = proxy.held
        finally:
            proxy.resume()
        await close_async(cache)
    assert waited_on == 1, waited_on
    assert cache.get_stats()["errors"] == 1
    await db.dispose()
