"""A Database nobody holds any more is collected with its engine, pool and connections, as a
plain SQLAlchemy engine is: a registry of dalkit's (the observers, the caches) never keeps one
alive. A program making a database per tenant or per test would run out of memory and file
descriptors otherwise."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, MemoryBackend, QueryCache


def test_a_dropped_database_is_collected_with_its_engine(tmp_path: Path) -> None:
    engines = []
    for n in range(5):
        cache = QueryCache(MemoryBackend()) if n % 2 else None
        db = Database(f"sqlite:///{tmp_path}/app.db", cache=cache, query_stats=True)
        assert db.sql("SELECT 1 AS one") == [{"one": 1}]
        engines.append(weakref.ref(db.engine))
    del db, cache
    gc.collect()
    assert [engine() for engine in engines] == [None] * 5


async def test_a_disposed_async_database_is_collected_with_its_engine(tmp_path: Path) -> None:
    engines = []
    for n in range(4):
        cache = AsyncQueryCache(MemoryBackend()) if n % 2 else None
        async with AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path}/app.db", cache=cache) as db:
            assert await db.sql("SELECT 1 AS one") == [{"one": 1}]
        engines.append(weakref.ref(db.engine.sync_engine))
    del db, cache
    gc.collect()
    assert [engine() for engine in engines] == [None] * 4
