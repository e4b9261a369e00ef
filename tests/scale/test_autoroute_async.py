"""AsyncDatabase with a real streaming replica: the plain reads of a default transaction (a
repository's, a cache miss's) go to the replica until the transaction writes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import QueuePool

from dalkit import AsyncDatabase, AsyncRepository
from dalkit.cache import AsyncQueryCache, MemoryBackend
from dalkit.engine.replicas import parse_lsn
from dalkit.testing.replication import Replication, current_lsn

from .helpers import wait_until_async
from .models import Base, Widget

INTERVAL = 0.2
T = TypeVar("T")


class Widgets(AsyncRepository[Widget]):
    pass


class CachedWidgets(AsyncRepository[Widget]):
    cache_ttl = 60


async def _database(
    urls: tuple[str, str], replication: Replication, **options: Any
) -> AsyncDatabase:
    primary, replica = urls
    database = AsyncDatabase(
        primary.replace("postgresql://", "postgresql+asyncpg://"),
        replicas=[replica],
        max_replica_lag_s=3600,
        replica_monitor_interval_s=INTERVAL,
        **options,
    )
    # as another process would: create_all binds the reads of its own context to the primary
    await asyncio.create_task(database.create_all(Base.metadata))
    await asyncio.to_thread(replication.replica.wait_for, current_lsn(replication.primary.url))
    return database


@pytest.fixture
async def db(
    replicated_database: tuple[str, str], replication: Replication
) -> AsyncIterator[AsyncDatabase]:
    database = await _database(replicated_database, replication)
    try:
        yield database
    finally:
        await database.dispose()


def _stats(db: AsyncDatabase) -> dict[str, Any]:
    stats: dict[str, Any] = db.get_stats()["replicas"]
    return stats


def _replica(db: AsyncDatabase) -> dict[str, Any]:
    replica: dict[str, Any] = next(iter(_stats(db)["replicas"].values()))
    return replica


async def _elsewhere(work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` in a task of its own context: another request, which wrote nothing."""
    return await asyncio.create_task(work(), context=contextvars.Context())  # type: ignore[arg-type]


async def _write(db: AsyncDatabase, widget_id: int, name: str) -> None:
    async def write() -> None:
        async with db.transaction() as session:
            await session.merge(Widget(id=widget_id, name=name))

    await _elsewhere(write)


async def _get(db: AsyncDatabase, widget_id: int) -> Widget | None:
    async with db.transaction() as session:
        return await Widgets(session).get_or_none(widget_id)


async def _paused_with(
    db: AsyncDatabase, replication: Replication, rows: dict[int, str], *, probing: bool = True
) -> None:
    """``rows`` written and replayed, the monitor has seen so (``probing``; else it has only
    admitted the replica: a monitor slowed down on purpose may have probed it before), then
    replay paused."""
    for widget_id, name in rows.items():
        await _write(db, widget_id, name)
    lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
    await asyncio.to_thread(replication.replica.wait_for, lsn)
    async with db.transaction(read_only=True) as session:  # starts the monitor task
        await session.execute(text("SELECT 1"))
    await _seen_at(db, lsn if probing else "0/0")
    await asyncio.to_thread(replication.replica.pause_replay)
    db.pop_stats()


async def _seen_at(db: AsyncDatabase, lsn: str) -> None:
    """Until the monitor has admitted the replica at ``lsn`` or past it: a loaded machine may
    take many of its rounds (a bound of 5 s went on silently, and the reads went elsewhere)."""
    await wait_until_async(
        lambda: (
            _replica(db)["admitted"] and parse_lsn(_replica(db)["replay_lsn"]) >= parse_lsn(lsn)
        ),
        seen=lambda: _replica(db),
    )


async def _replica_checked_out(db: AsyncDatabase) -> int:
    """The replica connections still out once the monitor task has given back its own.

    The monitor borrows a replica connection for a moment every INTERVAL, so a count taken at
    any instant could include it; a connection a transaction leaked never comes back.
    """
    pool = db._replicas.replicas.replicas[0].engine.pool  # type: ignore[union-attr]
    assert isinstance(pool, QueuePool)
    # a probe stalled on a loaded machine holds its connection for longer than 5 intervals
    with contextlib.suppress(AssertionError):
        await wait_until_async(lambda: pool.checkedout() == 0)
    checked_out: int = pool.checkedout()
    return checked_out


async def test_a_default_transactions_repository_reads_go_to_the_replica(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _paused_with(db, replication, {1: "before the pause"})
    await _write(db, 2, "after the pause")
    async with db.transaction() as session:
        widgets = Widgets(session)
        first = await widgets.get_or_none(1)
        second = await widgets.get_or_none(2)
        count = await widgets.count()
    assert first is not None
    assert (first.name, second, count) == ("before the pause", None, 1)
    assert _replica(db)["reads"] == 1
    assert _stats(db)["default_transactions_routed"] == 1
    assert await _replica_checked_out(db) == 0


async def test_a_write_then_read_in_one_transaction_reads_its_own_write_on_the_primary(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _paused_with(db, replication, {1: "old"})
    await _write(db, 2, "only on the primary")
    async with db.transaction() as session:
        widgets = Widgets(session)
        assert (await widgets.get(1)).name == "old"  # the replica
        await widgets.update(1, name="renamed")  # flushed to the primary
        await widgets.add(Widget(id=3, name="mine"))
        assert [w.name for w in await widgets.find(id=1)] == ["renamed"]
        assert (await widgets.get(3)).name == "mine"
        assert await widgets.get_or_none(2) is not None  # the primary answers now


async def test_a_write_then_read_across_transactions_never_reads_stale_rows(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _paused_with(db, replication, {})
    stale = 0
    for widget_id in range(1, 301):
        async with db.transaction() as session:
            await Widgets(session).add(Widget(id=widget_id, name=f"w{widget_id}"))
        stale += await _get(db, widget_id) is None
    assert stale == 0
    assert _stats(db)["read_your_writes_on_primary"] == 300
    assert await _elsewhere(lambda: _get(db, 300)) is None  # a request that wrote nothing
    assert _stats(db)["default_transactions_routed"] == 1


async def test_a_cached_read_miss_is_stored_only_from_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    """A lagging replica's result is never stored under tokens that a later commit set: a
    default transaction's miss reads the primary; a read-only one reads the replica, unstored."""
    cache = AsyncQueryCache(MemoryBackend())
    db = await _database(replicated_database, replication, cache=cache)
    try:
        await _paused_with(db, replication, {1: "old", 2: "old"})
        await _write(db, 1, "new")  # committed, tokens bumped, not replayed on the replica
        await _write(db, 2, "new")

        def fresh(widget_id: int, read_only: bool = False) -> Awaitable[str]:
            async def read() -> str:
                async with db.transaction(read_only=read_only) as session:
                    return (await CachedWidgets(session).get(widget_id)).name

            return _elsewhere(read)  # a request that wrote nothing

        assert await fresh(1) == "new"  # a miss, on the primary, stored
        assert await fresh(1) == "new"  # a hit
        assert await fresh(2, read_only=True) == "old"  # the replica, as routed: not stored
        assert await fresh(2) == "new"  # so this is a miss again, on the primary
        assert await fresh(2) == "new"
        assert await fresh(2, read_only=True) == "new"  # a read-only transaction is served hits
        stats = db.get_stats()["cache"]
        assert (stats["misses"], stats["hits"], stats["sets"]) == (3, 3, 2), stats
        assert _replica(db)["reads"] == 2  # the read-only transactions, routed whole
    finally:
        await db.dispose()


async def test_a_cached_miss_runs_on_a_replica_that_has_replayed_what_the_tokens_stand_for(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = await _database(replicated_database, replication, cache=AsyncQueryCache(MemoryBackend()))
    try:
        await _paused_with(db, replication, {})
        await _write(db, 1, "new")  # the widgets token now carries this commit's WAL position
        await asyncio.to_thread(replication.replica.resume_replay)
        lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
        await asyncio.to_thread(replication.replica.wait_for, lsn)
        await _seen_at(db, lsn)
        db.pop_stats()

        async def read() -> str:
            async with db.transaction() as session:
                return (await CachedWidgets(session).get(1)).name

        assert await _elsewhere(read) == "new"  # a miss, on the replica, stored
        assert await _elsewhere(read) == "new"  # a hit
        stats = db.get_stats()["cache"]
        assert (stats["misses"], stats["hits"], stats["sets"]) == (1, 1, 1), stats
        assert _stats(db)["default_transactions_routed"] == 1  # the miss; a hit sends nothing
        assert _replica(db)["reads"] == 1
    finally:
        await db.dispose()


async def test_route_reads_read_only_keeps_default_transactions_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = await _database(replicated_database, replication, route_reads="read_only")
    try:
        await _paused_with(db, replication, {})
        await _write(db, 1, "only on the primary")
        assert await _get(db, 1) is not None
        assert _replica(db)["reads"] == 0
    finally:
        await db.dispose()


async def test_a_read_only_transaction_is_still_routed_whole(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _paused_with(db, replication, {})
    await _write(db, 1, "only on the primary")

    async def read(session: AsyncSession) -> bool:
        return bool((await session.execute(text("SELECT pg_is_in_recovery()"))).scalar_one())

    assert await _elsewhere(lambda: db.transactional(read_only=True).run(read)) is True
    assert _stats(db)["default_transactions_routed"] == 0


@pytest.mark.slow
async def test_a_default_transaction_whose_replica_dies_mid_read_runs_again_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = await _database(replicated_database, replication)
    db._replicas.replicas.interval_s = 600  # type: ignore[union-attr]  # the read meets it first
    try:
        await _paused_with(db, replication, {1: "there"}, probing=False)
        await asyncio.to_thread(replication.replica.resume_replay)
        assert await _elsewhere(lambda: _get(db, 1)) is not None  # a pooled connection
        await asyncio.to_thread(replication.replica.shutdown)

        async def read(session: AsyncSession) -> str:
            return (await Widgets(session).get(1)).name

        names = [await _elsewhere(lambda: db.run_transaction(read)) for _ in range(5)]
        assert names == ["there"] * 5
        assert _stats(db)["rerouted_reads"] == 1
        assert (_replica(db)["state"], _replica(db)["errors"]) == ("down", 1)
    finally:
        await db.dispose()


async def test_a_default_transactions_first_read_starts_the_monitor_task(
    db: AsyncDatabase,
) -> None:
    assert await _get(db, 1) is None  # on the replica: the first round probed it first
    monitors = [t for t in asyncio.all_tasks() if t.get_name() == "dalkit-replica-monitor"]
    assert len(monitors) == 1
    assert _stats(db)["default_transactions_routed"] == 1
