"""A Database nobody holds any more is collected with its engine, and its pooled connections
are closed, as a plain SQLAlchemy engine's are: a registry of dalkit's (observers, caches)
never keeps one alive, and an async pool is closed on the loop that opened it. A program making
a database per tenant or per test would otherwise run out of memory, file descriptors and
server connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, MemoryBackend, QueryCache

from .activity import server_connections

# the collections look only at what each test made (see the fixture)
pytestmark = pytest.mark.usefixtures("frozen_heap")


class _Base(DeclarativeBase):
    pass


class _Item(_Base):
    __tablename__ = "gc_collected_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are ``path`` (SQLite's file)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while listed
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def _collect() -> None:
    # twice: the first collection runs the database's finalizer, which closes the pool and
    # then lets go of the engine, a cycle of SQLAlchemy's that the second one collects
    gc.collect()
    gc.collect()


async def _collected(refs: list[weakref.ref[Any]]) -> bool:
    """Whether every referent is gone, letting the loop run the pools' closing meanwhile."""
    for _ in range(100):
        _collect()
        if all(ref() is None for ref in refs):
            return True
        await asyncio.sleep(0.02)
    return False


def test_dropped_sqlite_databases_are_collected_and_close_their_files(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    databases = [
        Database(f"sqlite:///{path}", cache=QueryCache(MemoryBackend()) if n % 2 else None)
        for n in range(5)
    ]
    for db in databases:
        assert db.sql("SELECT 1 AS one") == [{"one": 1}]
    refs = [ref for db in databases for ref in (weakref.ref(db), weakref.ref(db.engine))]
    assert _open_files(path) == 5
    del db, databases
    _collect()
    assert [ref() for ref in refs] == [None] * 10
    assert _open_files(path) == 0


def test_an_orm_write_through_a_cache_keeps_no_engine_alive(tmp_path: Path) -> None:
    # SQLAlchemy's mappers cache statements per dialect, and the cache's write capture lives on
    # the dialect: it must not hold the engine
    db = Database(f"sqlite:///{tmp_path}/app.db", cache=QueryCache(MemoryBackend()))
    db.create_all(_Base.metadata)
    with db.session() as session:
        session.add(_Item(name="kept"))
    refs: list[weakref.ref[Any]] = [weakref.ref(db), weakref.ref(db.engine)]
    del db, session
    _collect()
    assert [ref() for ref in refs] == [None, None]


def test_a_disposed_database_is_collected_too(tmp_path: Path) -> None:
    with Database(f"sqlite:///{tmp_path}/app.db", cache=QueryCache(MemoryBackend())) as db:
        db.sql("SELECT 1")
    ref = weakref.ref(db.engine)
    del db
    _collect()
    assert ref() is None


@pytest.mark.postgres
def test_dropped_postgres_databases_close_their_connections(postgres_database_url: str) -> None:
    name = f"gc-{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    databases = [
        Database(url, application_name=name, cache=QueryCache(MemoryBackend()) if n else None)
        for n in range(3)
    ]
    for db in databases:
        db.sql("SELECT 1")
    refs = [ref for db in databases for ref in (weakref.ref(db), weakref.ref(db.engine))]
    assert server_connections(postgres_database_url, name) == 3
    del db, databases
    _collect()
    assert [ref() for ref in refs] == [None] * 6
    assert server_connections(postgres_database_url, name) == 0


async def test_dropped_async_sqlite_databases_close_their_files(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    url = f"sqlite+aiosqlite:///{path}"
    databases = [
        AsyncDatabase(url, cache=AsyncQueryCache(MemoryBackend()) if n % 2 else None)
        for n in range(4)
    ]
    for db in databases:
        assert await db.sql("SELECT 1 AS one") == [{"one": 1}]
    refs = [ref for db in databases for ref in (weakref.ref(db), weakref.ref(db.engine))]
    assert _open_files(path) == 4
    del db, databases
    assert await _collected(refs)
    assert _open_files(path) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_dropped_async_postgres_databases_close_their_connections(
    postgres_database_url: str, driver: str
) -> None:
    name = f"gc-{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")
    databases = [
        AsyncDatabase(
            url, application_name=name, cache=AsyncQueryCache(MemoryBackend()) if n else None
        )
        for n in range(3)
    ]
    for db in databases:
        async with db.session() as session:
            await session.connection()
        await db.sql("SELECT 1")
    refs = [ref for db in databases for ref in (weakref.ref(db), weakref.ref(db.engine))]
    assert server_connections(postgres_database_url, name) == 3
    del db, databases, session
    assert await _collected(refs)
    assert server_connections(postgres_database_url, name) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
def test_a_database_dropped_after_its_loop_closed_leaves_no_connection(
    postgres_database_url: str, driver: str
) -> None:
    # asyncpg's connections cannot be closed once their loop is: the loop closes them as it
    # shuts down (engine/loops.py); they were left open, and warned when collected
    name = f"gc-{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_database_url).set(drivername=f"postgresql+{driver}")

    async def used() -> AsyncDatabase:
        db = AsyncDatabase(url, application_name=name)
        await db.sql("SELECT 1")
        return db

    db = asyncio.run(used())  # the loop its connection belongs to is closed now
    ref = weakref.ref(db)
    del db
    _collect()  # a connection left open would warn here (an error in tests)
    assert ref() is None
    assert server_connections(postgres_database_url, name) == 0


@pytest.mark.postgres
def test_a_dropped_database_stops_its_replica_monitor(postgres_database_url: str) -> None:
    name = f"gc-{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    # the primary stands in for its replica: the monitor probes it all the same
    db = Database(url, application_name=name, replicas=[url], replica_monitor_interval_s=0.05)
    with db.transaction(read_only=True) as session:  # starts the monitor
        session.execute(sa.text("SELECT 1"))
    monitors = [t for t in threading.enumerate() if t.name == "dalkit-replica-monitor"]
    assert monitors
    del db, session
    _collect()
    for monitor in monitors:
        monitor.join(timeout=10)
        assert not monitor.is_alive()
    assert server_connections(postgres_database_url, name) == 0
