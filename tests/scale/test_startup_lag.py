"""A process that starts while its replica lags (sync and async, a real streaming replica): no
read goes to a replica the monitor has not probed, and the lag of one found behind every
position the monitor sampled is bounded by the age of what it last replayed."""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text

from dalkit import AsyncDatabase, Database
from dalkit.testing.replication import Replication, current_lsn

from .helpers import PROBE, MonitorProbes, items, metadata, wait_until, wait_until_async

INTERVAL = 0.2
MAX_LAG = 1.0


def _replicated(api: str, urls: tuple[str, str], max_lag: float) -> Database | AsyncDatabase:
    primary, replica = urls
    driver = "psycopg" if api == "sync" else "asyncpg"
    make = Database if api == "sync" else AsyncDatabase
    return make(
        primary.replace("postgresql://", f"postgresql+{driver}://"),
        replicas=[replica],
        max_replica_lag_s=max_lag,
        replica_monitor_interval_s=INTERVAL,
    )


def _prepare(urls: tuple[str, str], replication: Replication, *rows: int) -> None:
    """The table (and ``rows``), written by another process as it were, and replayed."""
    with Database(urls[0]) as setup:
        setup.create_all(metadata)
        with setup.transaction() as session:
            for row_id in rows:
                session.execute(items.insert().values(id=row_id, name=f"n{row_id}"))
    replication.replica.wait_for(current_lsn(replication.primary.url))


async def _in_fresh_contexts(db: Database | AsyncDatabase, work: Callable[..., Any]) -> Any:
    """``work(session)`` in a read-only transaction of a context that wrote nothing."""
    if isinstance(db, Database):  # in a thread: on the loop's, it reads before the monitor
        transactional = db.transactional(read_only=True)
        return await asyncio.to_thread(lambda: contextvars.Context().run(transactional.run, work))

    async def read() -> Any:
        return await db.transactional(read_only=True).run(work)

    return await asyncio.create_task(read(), context=contextvars.Context())


def _probe(row_id: int, api: str) -> Callable[..., Any]:
    def sync(session: Any) -> tuple[bool, bool]:
        found, in_recovery = session.execute(text(PROBE), {"id": row_id}).one()
        return bool(found), bool(in_recovery)

    async def async_(session: Any) -> tuple[bool, bool]:
        found, in_recovery = (await session.execute(text(PROBE), {"id": row_id})).one()
        return bool(found), bool(in_recovery)

    return sync if api == "sync" else async_


async def _dispose(db: Database | AsyncDatabase) -> None:
    if isinstance(db, Database):
        db.dispose()
    else:
        await db.dispose()


async def _healthy(db: Database | AsyncDatabase) -> None:
    """Until the monitor (a thread, or a task of this loop) has found the replica healthy."""
    await wait_until_async(lambda: _replica(db)["state"] == "healthy", seen=lambda: _replica(db))


def _replica(db: Database | AsyncDatabase) -> dict[str, Any]:
    stats: dict[str, Any] = db.get_stats()["replicas"]
    return {**next(iter(stats["replicas"].values())), **{"db": stats}}


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_a_process_started_while_its_replica_lags_reads_nothing_stale(
    api: str, replicated_database: tuple[str, str], replication: Replication
) -> None:
    _prepare(replicated_database, replication)
    replication.replica.pause_replay()
    with Database(replicated_database[0]) as writer, writer.transaction() as session:
        session.execute(items.insert().values(id=1, name="n1"))
    await asyncio.sleep(1.5 * MAX_LAG)  # the replica is now further behind than the limit
    db = _replicated(api, replicated_database, MAX_LAG)
    try:
        answers = [await _in_fresh_contexts(db, _probe(1, api)) for _ in range(10)]
        # was (False, True) at first: the replica, unprobed or measured from the monitor's
        # first sample of the primary, got reads for max_replica_lag_s
        assert answers == [(True, False)] * 10
        replica = _replica(db)
        assert replica["reads"] == 0
        assert replica["state"] in ("lagging", "unknown")  # unknown: its first probe was slow
        replication.replica.resume_replay()
        await _healthy(db)
        assert await _in_fresh_contexts(db, _probe(1, api)) == (True, True)
    finally:
        replication.replica.resume_replay()
        await _dispose(db)


@pytest.mark.parametrize("transaction", ["read_only", "default"])
@pytest.mark.parametrize("api", ["sync", "async"])
async def test_the_first_read_of_a_process_waits_for_the_first_probe(
    api: str, transaction: str, replicated_database: tuple[str, str], replication: Replication
) -> None:
    # a replica not probed yet gets no reads, but a short-lived process (a report, a job) still
    # reads on its replica: its first read waits for the monitor's first round
    _prepare(replicated_database, replication, 1)
    db = _replicated(api, replicated_database, 3600)
    try:
        if transaction == "read_only":
            assert await _in_fresh_contexts(db, _probe(1, api)) == (True, True)
        elif isinstance(db, Database):
            # a default transaction defers its BEGIN (and may route its reads) once the
            # primary's default isolation is known: the sync one did not wait for the round
            # that connects it, and read on the primary (the async one did)
            def read() -> None:
                with db.transaction() as session:
                    assert session.execute(select(items.c.name)).scalar_one() == "n1"

            await asyncio.to_thread(read)
        else:
            async with db.transaction() as session:
                assert (await session.execute(select(items.c.name))).scalar_one() == "n1"
        replica = _replica(db)
        assert (replica["reads"], replica["state"]) == (1, "healthy")
        assert replica["db"]["primary_reads"] == 0
    finally:
        await _dispose(db)


def test_a_forked_child_watches_its_replica_with_a_monitor_of_its_own(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    # gunicorn --preload with a warm-up read: the child had no monitor thread but believed it
    # had, and read on a replica far behind (its state frozen at 'healthy' by the fork)
    _prepare(replicated_database, replication)
    db = _replicated("sync", replicated_database, MAX_LAG)
    try:
        assert contextvars.Context().run(db.transactional(read_only=True).run, _probe(1, "sync"))
        wait_until(lambda: _replica(db)["state"] == "healthy", seen=lambda: _replica(db))
        db.pop_stats()
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child process
            try:
                os.read(read, 1)  # the replica is now further behind than the limit
                run = db.transactional(read_only=True).run
                answers = [contextvars.Context().run(run, _probe(1, "sync")) for _ in range(5)]
                os.write(write, repr((answers, _replica(db)["reads"])).encode())
            finally:
                os._exit(0)
        replication.replica.pause_replay()
        with Database(replicated_database[0]) as writer, writer.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
        time.sleep(1.5 * MAX_LAG)
        os.write(write, b"x")
        os.close(write)
        os.waitpid(child, 0)
        answer = os.read(read, 1000).decode()
        os.close(read)
        assert answer == repr(([(True, False)] * 5, 0))  # was [(False, True)] * 5, 5
    finally:
        replication.replica.resume_replay()
        db.dispose()


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_a_database_used_again_after_dispose_reads_nothing_stale(
    api: str, replicated_database: tuple[str, str], replication: Replication
) -> None:
    # dispose() stopped the monitor; the next read started it again, on the view it had when
    # it stopped (healthy) and with lag measured from its first new sample of the primary
    _prepare(replicated_database, replication)
    db = _replicated(api, replicated_database, MAX_LAG)
    try:
        assert await _in_fresh_contexts(db, _probe(1, api)) == (False, True)
        await _healthy(db)
        await _dispose(db)
        replication.replica.pause_replay()
        with Database(replicated_database[0]) as writer, writer.transaction() as session:
            session.execute(items.insert().values(id=1, name="n1"))
        await asyncio.sleep(1.5 * MAX_LAG)
        answers = [await _in_fresh_contexts(db, _probe(1, api)) for _ in range(5)]
        assert answers == [(True, False)] * 5  # was (False, True): the stale replica
    finally:
        replication.replica.resume_replay()
        await _dispose(db)


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_a_caught_up_replica_stays_in_after_a_wal_switch_on_an_idle_primary(
    api: str, replicated_database: tuple[str, str], replication: Replication
) -> None:
    # after a segment switch (archive_timeout, pg_switch_wal()) an idle primary's insert
    # position points past the next page's header, which no replica replays: the replica was
    # ejected as lagging max_replica_lag_s later (at once, at a process's start) until a write
    _prepare(replicated_database, replication, 1)
    with Database(replicated_database[0]) as admin:
        admin.sql("SELECT pg_switch_wal()")
    with Database(replicated_database[0]) as admin:  # what the replica can replay: all of it
        flushed = admin.sql("SELECT pg_current_wal_flush_lsn()::text AS lsn")[0]["lsn"]
    replication.replica.wait_for(flushed)
    db = _replicated(api, replicated_database, MAX_LAG)
    try:
        assert await _in_fresh_contexts(db, _probe(1, api)) == (True, True)
        probes = MonitorProbes(db.replica_engines)
        await asyncio.sleep(2 * MAX_LAG)  # idle: nothing for the replica to replay
        # and a whole round of the monitor after it (a loaded machine's rounds are slow): the
        # state is what the monitor found that long after the switch, not an older finding
        await wait_until_async(probes.rounds_from(probes.count), seen=lambda: probes.count)
        probes.close()
        assert _replica(db)["state"] == "healthy"
        assert await _in_fresh_contexts(db, _probe(1, api)) == (True, True)
    finally:
        await _dispose(db)
