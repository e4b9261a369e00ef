"""Reads routed to a read replica are the database's statements: they appear in its query
statistics, its slow-query log and its Prometheus histograms, as the primary's do (the replica
here is the primary's server reached through a second engine, as the router sees any replica)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from dalkit import AsyncDatabase, Database, DatabaseError
from dalkit.observe import install, observer_for
from dalkit.observe.prometheus import register

from .conftest import PostgresDatabases

READ = "SELECT 4242 AS routed_read"


async def _read(db: Database | AsyncDatabase, sql: str) -> None:
    if isinstance(db, AsyncDatabase):
        async with db.transaction(read_only=True) as session:
            await session.execute(sa.text(sql))
    else:
        # off the event loop's thread, as a sync Database is used: on it, the router does not
        # wait for the replica monitor's first round (it would stall the loop), so the first
        # reads would go to the primary
        await asyncio.to_thread(_read_sync, db, sql)


def _read_sync(db: Database, sql: str) -> None:
    with db.transaction(read_only=True) as session:
        session.execute(sa.text(sql))


@pytest.mark.postgres
async def test_replica_reads_are_observed(
    pg_databases: PostgresDatabases, caplog: pytest.LogCaptureFixture
) -> None:
    db = pg_databases(replicas=[pg_databases.url])
    registry = CollectorRegistry()
    register(db, "main", registry=registry)
    observer = install(db.engine, {"slow_query_ms": 0})
    caplog.set_level(logging.WARNING, "dalkit.slow_query")
    try:
        for _ in range(3):
            await _read(db, READ)
        with pytest.raises(DatabaseError):
            await _read(db, "SELECT no_such_column FROM pg_class")
        replica = db.get_stats()["replicas"]["replicas"]
        assert [r["reads"] for r in replica.values()] == [4]  # the reads went to the replica
        (routed,) = [s for s in observer.query_stats(None) if "routed_read" in s["statement"]]
        assert routed["count"] == 3
        (failed,) = [s for s in observer.query_stats(None) if "no_such_column" in s["statement"]]
        assert (failed["count"], failed["errors"]) == (0, 1)
        assert sum("routed_read" in r.getMessage() for r in caplog.records) == 3
        text = generate_latest(registry).decode()
        count = 'dalkit_query_duration_seconds_count{database="main",operation="SELECT"}'
        assert float(text.split(count, 1)[1].split()[0]) >= 3
        engines = [r.engine for r in db._replicas.replicas.replicas]  # type: ignore[union-attr]
        assert all(observer_for(e) is observer for e in engines)
    finally:
        observer.uninstall()


@pytest.mark.postgres
async def test_replica_reads_are_observed_again_after_uninstall_and_install(
    pg_databases: PostgresDatabases,
) -> None:
    db = pg_databases(replicas=[pg_databases.url])
    install(db.engine, {"query_stats": True}).uninstall()
    observer = install(db.engine, {"query_stats": True})
    try:
        for _ in range(2):
            await _read(db, READ)
        assert db.get_stats()["replicas"]["replicas"]  # routed to the replica
        (routed,) = [s for s in observer.query_stats(None) if "routed_read" in s["statement"]]
        assert routed["count"] == 2
        assert observer is db.observer  # the database's own figures are this observer's
        engines = [r.engine for r in db._replicas.replicas.replicas]  # type: ignore[union-attr]
        assert all(observer_for(e) is observer for e in engines)
    finally:
        observer.uninstall()
