"""dalkit's own statements on the primary (the replica monitor's samples, the WAL position read
after a commit) write nothing, and the cache must not take them for writes: they call
functions (``mod``, ``to_hex``, ``current_setting``...) that, while the cache has not read the
database's catalog, count as calls of functions that might write, so every monitor round
invalidated the whole cache (the async one bypassed until it was applied)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, Database
from dalkit.cache import AsyncQueryCache, QueryCache
from dalkit.engine.autoroute import PRIMARY_POSITION, PROBE
from dalkit.engine.probes import PRIMARY_SAMPLE, REPLAY_POSITION

from .models import Book

_PROBES = (PRIMARY_SAMPLE, REPLAY_POSITION, PRIMARY_POSITION)


@pytest.mark.parametrize("cache_kind", ["memory"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "committed"])
def test_the_probes_invalidate_nothing(db: Database, cache: QueryCache, autocommit: bool) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the probes read PostgreSQL's WAL positions")
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    with db.engine.connect().execution_options(**options) as connection:
        for probe in _PROBES:
            assert connection.exec_driver_sql(probe, execution_options=PROBE).all()
        connection.commit()
    assert cache.get_stats()["invalidations"] == 0
    for _ in range(2):
        with db.transaction() as session:
            assert cache.cached(session, sa.select(Book.title)).scalars().all() == ["a", "b"]
    assert (cache.get_stats()["misses"], cache.get_stats()["hits"]) == (1, 1)


@pytest.mark.parametrize("cache_kind", ["memory"])
async def test_the_probes_leave_the_async_cache_nothing_pending(
    async_db: AsyncDatabase, async_cache: AsyncQueryCache
) -> None:
    if async_db.engine.dialect.name != "postgresql":
        pytest.skip("the probes read PostgreSQL's WAL positions")
    engine = async_db.engine.execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        for probe in _PROBES:
            assert (await connection.exec_driver_sql(probe, execution_options=PROBE)).all()
    stats = async_cache.get_stats()
    assert (stats["invalidations"], stats["pending"], stats["bypasses"]) == (0, 0, 0)
    async with async_db.transaction() as session:
        assert (await async_cache.cached(session, sa.select(Book.title))).scalars().all() == [
            "a",
            "b",
        ]
    assert async_cache.get_stats()["bypasses"] == 0
