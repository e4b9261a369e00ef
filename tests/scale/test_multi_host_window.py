"""A replica URL naming two hosts, between the first host going down and the monitor's next
probe: the router still holds the first host's position for the name, so the reads that reach
the second host (further behind) in that window must not be taken for the first host's."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.engine.lsn import parse_lsn
from dalkit.engine.routing import ReplicaRouter
from dalkit.engine.routing_async import AsyncReplicaRouter
from dalkit.testing.replication import ReplicaServer, Replication, current_lsn

from .helpers import PROBE, hosts_url, items, metadata


def _replica(db: Database) -> dict[str, Any]:
    replicas: dict[str, Any] = db.get_stats()["replicas"]["replicas"]
    return next(iter(replicas.values()))


@pytest.mark.slow
def test_a_read_reaching_the_next_host_before_the_monitor_probes_it_is_not_stale(
    replicated_database: tuple[str, str],
    replication: Replication,
    second_replica: ReplicaServer,
) -> None:
    primary, first = replicated_database
    second = second_replica.url_for(make_url(first).database or "")
    db = Database(
        primary.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[hosts_url(first, second)],
        max_replica_lag_s=3600,
        replica_monitor_interval_s=3600,  # no round but the ones this test runs: the window
    )
    router = db._replicas
    assert isinstance(router, ReplicaRouter)

    def read(row_id: int) -> tuple[bool, bool]:
        def probe(session: Session) -> tuple[bool, bool]:
            found, in_recovery = session.execute(text(PROBE), {"id": row_id}).one()
            return bool(found), bool(in_recovery)

        result: tuple[bool, bool] = db.transactional(read_only=True).run(probe)
        return result

    def write() -> str:
        with db.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
        return current_lsn(replication.primary.url)

    try:
        contextvars.Context().run(db.create_all, metadata)
        lsn = current_lsn(replication.primary.url)
        replication.replica.wait_for(lsn)
        second_replica.wait_for(lsn)
        second_replica.pause_replay()  # the second host stays behind the write
        context = contextvars.Context()
        assert context.run(read, 1) == (False, True)  # the monitor's first round, on host 1
        written = context.run(write)
        replication.replica.wait_for(written)
        router.check()  # the monitor sees host 1 past the write
        assert parse_lsn(_replica(db)["replay_lsn"]) >= parse_lsn(written)
        assert context.run(read, 1) == (True, True)  # host 1 serves it
        replication.replica.shutdown()  # from now on, new connections reach host 2
        # before the monitor's next round: was (False, True), host 2 taken for host 1
        assert context.run(read, 1) == (True, False)
        assert _replica(db)["state"] == "down"
        router.check()  # the monitor probes host 2: its own position from now on
        assert _replica(db)["state"] == "healthy"
        assert parse_lsn(_replica(db)["replay_lsn"]) < parse_lsn(written)
        assert context.run(read, 1) == (True, False)  # host 2 has not replayed the write
        assert contextvars.Context().run(read, 1) == (False, True)  # no write to wait for
    finally:
        second_replica.resume_replay()
        db.dispose()


@pytest.mark.slow
async def test_an_async_read_reaching_the_next_host_before_the_monitor_probes_it_is_not_stale(
    replicated_database: tuple[str, str],
    replication: Replication,
    second_replica: ReplicaServer,
) -> None:
    primary, first = replicated_database
    second = second_replica.url_for(make_url(first).database or "")
    db = AsyncDatabase(
        primary.replace("postgresql://", "postgresql+asyncpg://"),
        replicas=[hosts_url(first, second)],
        max_replica_lag_s=3600,
        replica_monitor_interval_s=3600,
    )
    router = db._replicas
    assert isinstance(router, AsyncReplicaRouter)

    async def read(row_id: int) -> tuple[bool, bool]:
        async def probe(session: AsyncSession) -> tuple[bool, bool]:
            found, in_recovery = (await session.execute(text(PROBE), {"id": row_id})).one()
            return bool(found), bool(in_recovery)

        result: tuple[bool, bool] = await db.transactional(read_only=True).run(probe)
        return result

    async def scenario() -> list[tuple[bool, bool]]:
        seen = [await read(1)]  # the monitor's first round, on host 1
        async with db.transaction() as session:
            await session.execute(items.insert().values(id=1, name="n1"))
        written = await asyncio.to_thread(current_lsn, replication.primary.url)
        await asyncio.to_thread(replication.replica.wait_for, written)
        await router.check()  # the monitor sees host 1 past the write
        seen.append(await read(1))
        await asyncio.to_thread(replication.replica.shutdown)
        seen.append(await read(1))  # before the monitor's next round
        await router.check()
        seen.append(await read(1))
        return seen

    try:
        await db.create_all(metadata)
        lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
        await asyncio.to_thread(replication.replica.wait_for, lsn)
        await asyncio.to_thread(second_replica.wait_for, lsn)
        await asyncio.to_thread(second_replica.pause_replay)
        seen = await asyncio.create_task(scenario(), context=contextvars.Context())
        # the third was (False, True): host 2 taken for host 1
        assert seen == [(False, True), (True, True), (True, False), (True, False)]
    finally:
        await asyncio.to_thread(second_replica.resume_replay)
        await db.dispose()
