"""Failover through a multi-host URL: a writer keeps committing while the primary is killed
(``-m immediate``) and its synchronous replica promoted."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database, RetryPolicy
from dalkit.errors import CommitOutcomeUnknownError
from dalkit.testing.replication import Replication, current_lsn, stop_immediately

from .helpers import items, wait_until, wait_until_async

# patient enough to wait out the promotion on a loaded machine
POLICY = RetryPolicy(attempts=200, base_delay=0.05, max_delay=0.3, deadline=90)
BEFORE, AFTER = 40, 40


def _multi_host_url(pair: Replication, name: str, driver: str) -> str:
    password = pair.primary.url.split(":")[2].split("@")[0]
    return (
        f"postgresql+{driver}://dalkit:{password}@127.0.0.1:{pair.primary.port},"
        f"127.0.0.1:{pair.replica.port}/{name}?target_session_attrs=read-write"
    )


def _fail_over(pair: Replication) -> None:
    stop_immediately(pair.primary)
    pair.replica.promote()


def _rows_on(pair: Replication, name: str) -> set[int]:
    with psycopg.connect(pair.replica.url_for(name), autocommit=True) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM scale_items")}


def _prepare(pair: Replication) -> str:
    name = "failover"
    primary_url, _ = pair.create_database(name)
    with psycopg.connect(primary_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE scale_items (id int PRIMARY KEY, name text NOT NULL)")
    pair.replica.wait_for(current_lsn(pair.primary.url))
    return name


def _check(
    pair: Replication, name: str, committed: list[int], errors: list[Any], stats: dict[str, Any]
) -> None:
    print(
        f"failover: {len(committed)} commits reported, {stats['retries']} retries, "
        f"{len(errors)} unknown outcomes ({stats['outcome_unknown']} counted)"
    )
    assert stats["retries"] >= 1 or errors  # the failover was felt by the writer
    unexpected = [e for e in errors if not isinstance(e, CommitOutcomeUnknownError)]
    assert unexpected == []
    assert len(committed) >= BEFORE + AFTER
    present = _rows_on(pair, name)
    missing = set(committed) - present
    assert missing == set(), f"{len(missing)} reported commits are not on the promoted node"


@pytest.mark.slow
def test_a_writer_continues_on_the_promoted_replica_and_loses_no_commit(
    failover_replication: Replication,
) -> None:
    pair = failover_replication
    name = _prepare(pair)
    db = Database(_multi_host_url(pair, name, "psycopg"), connect_timeout_s=2)
    committed: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def insert(session: Session, row_id: int) -> None:
        session.execute(items.insert().values(id=row_id, name="w"))

    def writer() -> None:
        row_id = 0
        while not stop.is_set():
            row_id += 1
            try:
                db.transactional(retry=POLICY).run(insert, row_id)
            except Exception as error:  # CommitOutcomeUnknownError is checked by _check
                errors.append(error)
                row_id += 1000  # the unknown one may exist: never reuse its key
                continue
            committed.append(row_id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # bounded, and failing with what the writer met (it looped for good if the writer died)
        wait_until(lambda: len(committed) >= BEFORE or not thread.is_alive(), seen=lambda: errors)
        assert len(committed) >= BEFORE, errors
        _fail_over(pair)
        target = len(committed) + AFTER
        deadline = time.monotonic() + 90
        while len(committed) < target and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
        db.dispose()
    _check(pair, name, committed, errors, db.transaction_stats())


@pytest.mark.slow
async def test_an_async_writer_continues_on_the_promoted_replica_and_loses_no_commit(
    failover_replication: Replication,
) -> None:
    pair = failover_replication
    name = await asyncio.to_thread(_prepare, pair)
    db = AsyncDatabase(_multi_host_url(pair, name, "asyncpg"), connect_timeout_s=2)
    committed: list[int] = []
    errors: list[BaseException] = []

    async def insert(session: AsyncSession, row_id: int) -> None:
        await session.execute(text("INSERT INTO scale_items VALUES (:id, 'w')"), {"id": row_id})

    async def writer(until: asyncio.Event) -> None:
        row_id = 0
        while not until.is_set():
            row_id += 1
            try:
                await db.transactional(retry=POLICY).run(insert, row_id)
            except Exception as error:
                errors.append(error)
                row_id += 1000
                continue
            committed.append(row_id)

    done = asyncio.Event()
    task = asyncio.create_task(writer(done))
    try:
        # bounded, and failing with what the writer met (it looped for good if the writer died)
        await wait_until_async(lambda: len(committed) >= BEFORE or task.done(), seen=lambda: errors)
        assert len(committed) >= BEFORE, errors
        await asyncio.to_thread(_fail_over, pair)
        target = len(committed) + AFTER
        deadline = time.monotonic() + 90
        while len(committed) < target and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        done.set()
        await task
        await db.dispose()
    _check(pair, name, committed, errors, db.transaction_stats())
