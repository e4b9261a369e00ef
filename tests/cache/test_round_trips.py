"""What a hit and a commit cost, counted where they happen: Redis commands by the server's own
statistics, database connections by the pool's checkout events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import event

from dalkit import Database, RedisManager
from dalkit.cache import QueryCache, RedisBackend, install
from dalkit.testing._server import free_port
from dalkit.testing.redis import RedisServer

from .models import Author, Base, Book

STAT_KEYS = {"hits", "misses", "sets", "invalidations", "bypasses", "errors", "hit_ratio"}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own: its command statistics count this test alone."""
    with RedisServer(port=free_port()) as redis_server:
        yield redis_server


@pytest.fixture
def cached_db(db: Database, server: RedisServer) -> Iterator[tuple[Database, QueryCache]]:
    db.create_all(Base.metadata)
    with db.transaction() as session:
        session.add(Author(id=1, name="Ann", books=[Book(id=1, title="a")]))
    manager = RedisManager(server.url)
    cache = install(db, QueryCache(RedisBackend(manager)))
    yield db, cache
    cache.backend.close()
    manager.close()


def commands(server: RedisServer, run: Any) -> dict[str, int]:
    """The Redis commands ``run()`` sent, by name, and how many times."""
    client = redis.Redis.from_url(server.url)
    client.config_resetstat()
    run()
    stats = client.info("commandstats")
    client.close()
    counted = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    return {name: n for name, n in counted.items() if name not in {"config|resetstat", "info"}}


def test_a_redis_hit_is_one_round_trip_and_checks_out_no_database_connection(
    cached_db: tuple[Database, QueryCache], server: RedisServer
) -> None:
    db, cache = cached_db
    statement = sa.select(Book).where(Book.id == 1)

    def read() -> str:
        with db.transaction() as session:
            book: Book = cache.cached(session, statement).scalar_one()
            return book.title

    assert read() == "a"  # the miss stores the entry
    checkouts: list[object] = []
    event.listen(db.engine.pool, "checkout", lambda *args: checkouts.append(args))
    titles: list[str] = []
    assert commands(server, lambda: titles.append(read())) == {"mget": 1}
    assert titles == ["a"]
    assert checkouts == []  # a transaction that only hit never connects (deferred BEGIN)
    assert cache.get_stats()["hits"] == 1


def test_a_commit_writing_two_tables_in_two_statements_bumps_them_in_one_round_trip(
    cached_db: tuple[Database, QueryCache], server: RedisServer
) -> None:
    db, cache = cached_db
    with db.transaction() as session:  # the backend's connection is open before counting
        cache.cached(session, sa.select(Author.name))

    def write() -> None:
        with db.transaction() as session:
            session.execute(sa.update(Author).values(name="Bo"))
            session.execute(sa.update(Book).values(title="c"))

    assert commands(server, write) == {"mset": 1}
    assert cache.get_stats()["invalidations"] == 2


def test_the_statistics_have_the_names_the_exporters_read(
    cached_db: tuple[Database, QueryCache],
) -> None:
    db, cache = cached_db
    with db.transaction() as session:
        cache.cached(session, sa.select(Book.title))
    stats = cache.get_stats()
    assert stats.keys() >= STAT_KEYS
    assert (stats["misses"], stats["sets"], stats["hit_ratio"]) == (1, 1, 0.0)
    assert db.get_stats()["cache"]["misses"] == 1
