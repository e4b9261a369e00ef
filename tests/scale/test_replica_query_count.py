"""count_queries on a database with a replica: routed reads count, dalkit's own probes do not."""

from __future__ import annotations

import asyncio
import contextvars

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from dalkit import AsyncDatabase, Database
from dalkit.testing import assert_max_queries, count_queries

from .helpers import MonitorProbes, items, metadata, wait_until, wait_until_async

INTERVAL = 0.05  # the monitor probes the primary and the replica this often


def test_count_queries_counts_replica_reads_and_not_the_monitor(
    replicated_database: tuple[str, str],
) -> None:
    primary, replica = replicated_database
    with Database(primary, replicas=[replica], replica_monitor_interval_s=INTERVAL) as db:
        db.create_all(metadata)
        with db.transaction(read_only=True) as session:  # starts the monitor
            session.execute(text("SELECT 1"))
        probes = MonitorProbes(db.replica_engines)
        with count_queries(db) as idle:
            # whole monitor rounds inside the block (6 intervals of sleep could pass without
            # one on a loaded machine, and the test with them)
            wait_until(probes.rounds_from(probes.count), seen=lambda: probes.count)
        probes.close()
        with assert_max_queries(db, 1) as routed, db.transaction(read_only=True) as session:
            session.connection().exec_driver_sql("SELECT 42")
        # a write records the primary's WAL position after its commit, for read-your-writes
        with count_queries(db) as written, db.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
    assert idle.statements == []
    assert routed.statements == ["SELECT 42"]
    assert len(written.statements) == 1
    assert written.statements[0].startswith("INSERT INTO scale_items")


def test_count_queries_counts_async_replica_reads_and_not_the_monitor(
    replicated_database: tuple[str, str],
) -> None:
    primary, replica = replicated_database

    async def counted() -> tuple[list[str], list[str]]:
        db = AsyncDatabase(
            primary.replace("postgresql://", "postgresql+asyncpg://"),
            replicas=[replica.replace("postgresql://", "postgresql+asyncpg://")],
            replica_monitor_interval_s=INTERVAL,
        )
        try:
            async with db.transaction(read_only=True) as session:  # starts the monitor
                await session.execute(text("SELECT 1"))
            probes = MonitorProbes(db.replica_engines)
            with count_queries(db) as idle:
                await wait_until_async(probes.rounds_from(probes.count), seen=lambda: probes.count)
            probes.close()
            with count_queries(db) as routed:
                async with db.transaction(read_only=True) as session:
                    await session.execute(text("SELECT 42"))
        finally:
            await db.dispose()
        return idle.statements, routed.statements

    idle, routed = contextvars.Context().run(asyncio.run, counted())
    assert idle == []
    assert routed == ["SELECT 42"]


def test_replica_engines_are_public_and_count_queries_hears_them_through_a_wrapper(
    replicated_database: tuple[str, str],
) -> None:
    primary, replica = replicated_database
    with Database(primary, replicas=[replica], replica_monitor_interval_s=INTERVAL) as db:
        assert [engine.url.port for engine in db.replica_engines] == [make_url(replica).port]

        class Facade:  # an application's own wrapper, showing what count_queries needs
            engine = db.engine
            replica_engines = db.replica_engines

        with count_queries(Facade()) as counted, db.transaction(read_only=True) as session:
            session.connection().exec_driver_sql("SELECT 42")
    assert counted.statements == ["SELECT 42"]

    async def async_engines() -> list[object]:
        async with AsyncDatabase(
            primary.replace("postgresql://", "postgresql+asyncpg://"),
            replicas=[replica.replace("postgresql://", "postgresql+asyncpg://")],
        ) as db:
            return list(db.replica_engines)

    engines = contextvars.Context().run(asyncio.run, async_engines())
    assert [type(engine) for engine in engines] == [AsyncEngine]
    with Database("sqlite://") as plain:
        assert plain.replica_engines == ()
