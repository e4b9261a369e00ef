"""Read-your-writes when the primary's position cannot be read after a commit (its connections
ended right after COMMIT, new ones refused): the context reads from the primary until a later
read of the primary's position settles it, never from a replica that lacks the commit."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database
from dalkit.engine.lsn import parse_lsn
from dalkit.engine.ryw import LOST_TOKEN
from dalkit.testing.replication import Replication, current_lsn

from .helpers import PROBE, items, metadata, wait_until, wait_until_async

INTERVAL = 0.2


def _cut_off(admin_url: str, name: str) -> None:
    """End every connection to database ``name`` and refuse new ones, until `_let_in()`."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        left = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        wait_until(lambda: admin.execute(left, (name,)).fetchone() == (0,))


def _let_in(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _replica(db: Database | AsyncDatabase) -> dict[str, Any]:
    replica: dict[str, Any] = next(iter(db.get_stats()["replicas"]["replicas"].values()))
    return replica


def _replica_lsn(stats: dict[str, Any]) -> int:
    return parse_lsn(next(iter(stats["replicas"]["replicas"].values()))["replay_lsn"])


@pytest.mark.slow
def test_a_commit_whose_position_cannot_be_read_keeps_the_context_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    primary, replica = replicated_database
    name = make_url(primary).database or ""
    db = Database(
        primary.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[replica],
        max_replica_lag_s=3600,  # read-your-writes alone decides
        replica_monitor_interval_s=INTERVAL,
    )

    def read(row_id: int) -> tuple[bool, bool]:
        def probe(session: Session) -> tuple[bool, bool]:
            found, in_recovery = session.execute(text(PROBE), {"id": row_id}).one()
            return bool(found), bool(in_recovery)

        result: tuple[bool, bool] = db.transactional(read_only=True).run(probe)
        return result

    def write_then_read() -> tuple[tuple[bool, bool], tuple[bool, bool]]:
        with db.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
            # the commit has happened; the router's read of the primary's position follows
            event.listen(session, "after_commit", lambda _: _cut_off(replication.primary.url, name))
        _let_in(replication.primary.url, name)
        first = read(1)
        # the monitor's next sample of the primary settles the position: not for good
        wait_until(lambda: db.replica_token() != LOST_TOKEN)
        second = read(1)
        return first, second

    try:
        contextvars.copy_context().run(db.create_all, metadata)
        lsn = current_lsn(replication.primary.url)
        replication.replica.wait_for(lsn)
        contextvars.Context().run(read, 1)  # starts the monitor
        # its first round (a read waits for it only a second: longer on a loaded machine)
        wait_until(lambda: _replica(db)["admitted"], seen=lambda: _replica(db))
        assert contextvars.Context().run(read, 1) == (False, True)
        wait_until(
            lambda: _replica_lsn(db.get_stats()) >= parse_lsn(lsn), seen=lambda: _replica(db)
        )
        replication.replica.pause_replay()
        context = contextvars.Context()
        first, second = context.run(write_then_read)
        assert first == (True, False)  # was (False, True): the paused replica, without the row
        assert second == (True, False)  # the replica has not replayed it yet
        token = context.run(db.replica_token)
        assert token is not None
        assert parse_lsn(token) >= parse_lsn(lsn)
        assert db.get_stats()["replicas"]["positions_lost"] == 1
        replication.replica.resume_replay()
        wait_until(lambda: context.run(read, 1) == (True, True))  # back on the replica
    finally:
        _let_in(replication.primary.url, name)
        db.dispose()


@pytest.mark.slow
async def test_an_async_commit_whose_position_cannot_be_read_keeps_the_task_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    primary, replica = replicated_database
    name = make_url(primary).database or ""
    db = AsyncDatabase(
        primary.replace("postgresql://", "postgresql+asyncpg://"),
        replicas=[replica],
        max_replica_lag_s=3600,
        replica_monitor_interval_s=INTERVAL,
    )

    async def read(row_id: int) -> tuple[bool, bool]:
        async with db.transaction(read_only=True) as session:
            found, in_recovery = (await session.execute(text(PROBE), {"id": row_id})).one()
        return bool(found), bool(in_recovery)

    async def write_then_read() -> tuple[bool, bool]:
        async with db.transaction() as session:
            await session.execute(items.insert().values(id=1, name="n1"))
            event.listen(
                session.sync_session,
                "after_commit",
                lambda _: _cut_off(replication.primary.url, name),
            )
        await asyncio.to_thread(_let_in, replication.primary.url, name)
        return await read(1)

    try:
        await db.create_all(metadata)
        lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
        await asyncio.to_thread(replication.replica.wait_for, lsn)
        await asyncio.create_task(read(1), context=contextvars.Context())  # starts the monitor
        # its first round (a read waits for it only a second: longer on a loaded machine)
        await wait_until_async(lambda: _replica(db)["admitted"], seen=lambda: _replica(db))
        assert await asyncio.create_task(read(1), context=contextvars.Context()) == (False, True)
        await wait_until_async(
            lambda: _replica_lsn(db.get_stats()) >= parse_lsn(lsn), seen=lambda: _replica(db)
        )
        await asyncio.to_thread(replication.replica.pause_replay)
        task = asyncio.create_task(write_then_read(), context=contextvars.Context())
        assert await task == (True, False)  # was (False, True)
        assert db.get_stats()["replicas"]["positions_lost"] == 1
    finally:
        await asyncio.to_thread(_let_in, replication.primary.url, name)
        await db.dispose()
