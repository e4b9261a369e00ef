"""AsyncDatabase with a real streaming replica: routing, read-your-writes per task, the
monitor task's ejection and re-admission, a stopped replica."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from dalkit import AsyncDatabase
from dalkit.errors import DatabaseError
from dalkit.testing.replication import Replication, current_lsn

from .helpers import (
    FRESH_COUNT,
    PROBE,
    WAIT,
    MonitorProbes,
    fresh_metadata,
    items,
    metadata,
    wait_until_async,
)

INTERVAL = 0.2
MAX_LAG = 0.6


async def _database(
    urls: tuple[str, str], replication: Replication, max_lag: float
) -> AsyncDatabase:
    primary, replica = urls
    database = AsyncDatabase(
        primary.replace("postgresql://", "postgresql+asyncpg://"),
        replicas=[replica],
        max_replica_lag_s=max_lag,
        replica_monitor_interval_s=INTERVAL,
    )
    await database.create_all(metadata)
    await asyncio.to_thread(replication.replica.wait_for, current_lsn(replication.primary.url))
    return database


@pytest.fixture
async def db(
    replicated_database: tuple[str, str], replication: Replication
) -> AsyncIterator[AsyncDatabase]:
    database = await _database(replicated_database, replication, MAX_LAG)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def patient_db(
    replicated_database: tuple[str, str], replication: Replication
) -> AsyncIterator[AsyncDatabase]:
    database = await _database(replicated_database, replication, 3600)
    try:
        yield database
    finally:
        await database.dispose()


async def _insert(db: AsyncDatabase, row_id: int) -> None:
    async with db.transaction() as session:
        await session.execute(items.insert().values(id=row_id, name=f"n{row_id}"))


async def _read(db: AsyncDatabase, row_id: int) -> tuple[bool, bool]:
    async def probe(session: AsyncSession) -> tuple[bool, bool]:
        found, in_recovery = (await session.execute(text(PROBE), {"id": row_id})).one()
        return bool(found), bool(in_recovery)

    result: tuple[bool, bool] = await db.transactional(read_only=True).run(probe)
    return result


async def _fresh_read(db: AsyncDatabase, row_id: int) -> tuple[bool, bool]:
    """A read from a task that wrote nothing (a task copies the context it starts in)."""
    return await asyncio.create_task(_read(db, row_id), context=contextvars.Context())


def _replica_stats(db: AsyncDatabase) -> dict[str, Any]:
    replicas: dict[str, Any] = db.get_stats()["replicas"]["replicas"]
    return next(iter(replicas.values()))


async def _until(db: AsyncDatabase, state: str) -> None:
    """Until the monitor has found the replica in ``state``: bounds of 5 or 10 s were short
    for a loaded machine's monitor rounds."""
    await wait_until_async(
        lambda: _replica_stats(db)["state"] == state, seen=lambda: _replica_stats(db)
    )


async def _caught_up(db: AsyncDatabase, replication: Replication) -> None:
    from dalkit.engine.replicas import parse_lsn

    lsn = await asyncio.to_thread(current_lsn, replication.primary.url)
    await asyncio.to_thread(replication.replica.wait_for, lsn)
    await wait_until_async(
        lambda: parse_lsn(_replica_stats(db)["replay_lsn"]) >= parse_lsn(lsn),
        seen=lambda: _replica_stats(db),
    )


async def test_reads_after_writes_in_a_task_never_see_stale_data_while_replay_is_paused(
    patient_db: AsyncDatabase, replication: Replication
) -> None:
    db = patient_db
    await _insert(db, 0)
    await _read(db, 0)  # starts the monitor task
    await _caught_up(db, replication)
    db.pop_stats()
    await asyncio.to_thread(replication.replica.pause_replay)
    stale = on_primary = other_on_replica = 0
    for row_id in range(1, 301):
        await _insert(db, row_id)
        found, in_recovery = await _read(db, row_id)
        stale += not found
        on_primary += not in_recovery
        other_on_replica += (await _fresh_read(db, row_id))[1]
    assert (stale, on_primary, other_on_replica) == (0, 300, 300)
    assert db.get_stats()["replicas"]["read_your_writes_on_primary"] == 300

    token = db.replica_token()

    async def elsewhere() -> tuple[bool, bool]:  # what another process holding the token gets
        with db.read_your_writes(token):
            return await _read(db, 300)

    assert await asyncio.create_task(elsewhere(), context=contextvars.Context()) == (True, False)

    await asyncio.to_thread(replication.replica.resume_replay)
    deadline = time.monotonic() + WAIT  # the monitor's rounds to see the replay: 10 s was short
    while (seen := await _read(db, 300)) != (True, True):
        assert time.monotonic() < deadline, (seen, _replica_stats(db))
        await asyncio.sleep(0.05)


async def test_lag_over_the_threshold_ejects_and_catching_up_readmits(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _read(db, 0)
    await _caught_up(db, replication)
    await asyncio.to_thread(replication.replica.pause_replay)
    await _insert(db, 1)
    # what each probe from the commit on found before it: the ejecting probe is the one before
    # the first to find the replica lagging, however late this task looks
    probes = MonitorProbes(db.replica_engines, note=lambda: _replica_stats(db)["state"])
    await wait_until_async(
        lambda: "lagging" in probes.notes, seen=lambda: (probes.notes, _replica_stats(db))
    )
    probes.close()
    # the lag passes MAX_LAG at most a round after the commit (the round whose primary sample
    # first shows it) plus MAX_LAG: the probe after that ejects. Rounds are at least INTERVAL
    # apart, so that counts in rounds, not seconds (a loaded machine's rounds are long)
    assert probes.notes.index("lagging") <= round(MAX_LAG / INTERVAL) + 3, probes.notes
    assert await _fresh_read(db, 1) == (True, False)
    await asyncio.to_thread(replication.replica.resume_replay)
    await _until(db, "healthy")
    assert await _fresh_read(db, 1) == (True, True)


@pytest.mark.slow
async def test_a_stopped_replica_is_ejected_and_reads_fall_back_without_errors(
    db: AsyncDatabase, replication: Replication
) -> None:
    await _read(db, 0)
    await _insert(db, 1)
    await _caught_up(db, replication)
    assert await _fresh_read(db, 1) == (True, True)
    await asyncio.to_thread(replication.replica.shutdown)
    answers = [await _fresh_read(db, 1) for _ in range(20)]
    assert answers == [(True, False)] * 20
    await _until(db, "down")
    await asyncio.to_thread(replication.replica.start_again)
    await _until(db, "healthy")
    assert await _fresh_read(db, 1) == (True, True)


async def test_dispose_stops_the_monitor_task(db: AsyncDatabase) -> None:
    await _read(db, 0)
    monitors = [t for t in asyncio.all_tasks() if t.get_name() == "dalkit-replica-monitor"]
    assert len(monitors) == 1
    await db.dispose()
    assert monitors[0].done()


async def test_a_routed_read_only_transaction_keeps_its_transaction_local_settings(
    db: AsyncDatabase,
) -> None:
    async def tenant_and_server(session: AsyncSession) -> tuple[str, bool]:
        await session.execute(text("SELECT set_config('app.tenant', 'shop-7', true)"))
        setting, in_recovery = (
            await session.execute(
                text("SELECT current_setting('app.tenant', true), pg_is_in_recovery()")
            )
        ).one()
        return setting, in_recovery

    async def setting(session: AsyncSession) -> str | None:
        value: str | None = (
            await session.execute(text("SELECT current_setting('app.tenant', true)"))
        ).scalar_one()
        return value

    read_only = db.transactional(read_only=True)
    fresh = contextvars.Context()
    assert await asyncio.create_task(read_only.run(tenant_and_server), context=fresh) == (
        "shop-7",
        True,
    )
    fresh = contextvars.Context()
    assert await asyncio.create_task(read_only.run(setting), context=fresh) in ("", None)


@pytest.mark.slow
async def test_a_read_only_block_whose_replica_died_sends_the_next_one_elsewhere(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # a monitor too slow to notice: the failed block itself must eject the replica
    primary, replica = replicated_database
    url = primary.replace("postgresql://", "postgresql+asyncpg://")
    async with AsyncDatabase(url, replicas=[replica], replica_monitor_interval_s=3600) as db:

        async def in_recovery() -> bool:
            async with db.transaction(read_only=True) as session:
                return bool((await session.execute(text("SELECT pg_is_in_recovery()"))).scalar())

        assert await in_recovery()
        await _until(db, "healthy")  # probed: no more
        await asyncio.to_thread(replication.replica.shutdown)
        with pytest.raises(DatabaseError):  # a with-block cannot be run again: the caller sees it
            await in_recovery()
        assert [await in_recovery() for _ in range(3)] == [False] * 3
        assert _replica_stats(db)["state"] == "down"


def test_the_loop_in_use_watches_lag_while_the_loop_that_started_the_monitor_is_stopped(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # pytest-asyncio's session loop (a session-scoped database) waits, stopped, while each
    # test's loop runs: its monitor task watched nothing meanwhile, and no other was started
    async def lagging(db: AsyncDatabase) -> tuple[bool, bool]:
        await _read(db, 0)
        await _caught_up(db, replication)
        await asyncio.to_thread(replication.replica.pause_replay)
        await _insert(db, 1)
        await _until(db, "lagging")
        return await _fresh_read(db, 1)

    with asyncio.Runner() as session_loop:
        db = session_loop.run(_database(replicated_database, replication, MAX_LAG))
        session_loop.run(_read(db, 0))  # starts the monitor on the session loop
        try:
            with asyncio.Runner() as test_loop:
                assert test_loop.run(lagging(db)) == (True, False)  # from the primary
        finally:
            replication.replica.resume_replay()
        session_loop.run(db.dispose())


async def test_a_table_create_all_made_is_read_on_the_primary_until_replayed(
    patient_db: AsyncDatabase, replication: Replication
) -> None:
    # create_all wrote outside the runner: the next plain read went to a lagging replica
    replication.replica.pause_replay()
    try:
        await patient_db.create_all(fresh_metadata)
        async with patient_db.transaction() as session:
            assert (await session.execute(FRESH_COUNT)).scalar_one() == 0
    finally:
        replication.replica.resume_replay()
