"""Lost updates: 8 workers x 50 ORM read-modify-write increments of one counter through
@transactional end at exactly 400, with a version column or with SELECT ... FOR UPDATE."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import AsyncDatabase, Database, RetryPolicy

from .models import Counter, create_all, create_all_async

WORKERS = 8
INCREMENTS = 50
# eight writers on one row: with a version column all but one lose each round and retry
PATIENT = RetryPolicy(attempts=100, base_delay=0.005, max_delay=0.1)
STRATEGIES = ["version column", "select for update"]
# eight writers of one row: a full collection of the suite's heap while one holds the row
# stalls the others (see test_bank.py's pytestmark)
pytestmark = pytest.mark.usefixtures("frozen_heap")


def _load(session: Session, strategy: str) -> Counter:
    statement = sa.select(Counter).where(Counter.id == 1)
    if strategy == "select for update":
        statement = statement.with_for_update()  # SQLite has no FOR UPDATE: BEGIN IMMEDIATE
    return session.scalars(statement).one()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_increments_in_threads_lose_nothing(db: Database, strategy: str) -> None:
    create_all(db)
    with db.transaction() as session:
        session.add(Counter(id=1, value=0))
    db.transaction_stats(reset=True)

    @db.transactional(retry=PATIENT)
    def increment(session: Session) -> None:
        counter = _load(session, strategy)
        counter.value += 1

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(INCREMENTS):
                increment()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stats = db.transaction_stats()
    with db.transaction() as session:
        counter = session.get(Counter, 1)
        assert counter is not None
        final = counter.value
    print(
        f"\nlost update ({db.engine.dialect.name}, threads, {strategy}): counter {final}, "
        f"{stats['retries']} retries"
    )
    assert errors == []
    assert final == WORKERS * INCREMENTS
    assert stats["committed"] == WORKERS * INCREMENTS


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_concurrent_increments_in_tasks_lose_nothing(
    async_db: AsyncDatabase, strategy: str
) -> None:
    await create_all_async(async_db)
    async with async_db.transaction() as session:
        session.add(Counter(id=1, value=0))
    async_db.transaction_stats(reset=True)

    @async_db.transactional(retry=PATIENT)
    async def increment(session: AsyncSession) -> None:
        statement = sa.select(Counter).where(Counter.id == 1)
        if strategy == "select for update":
            statement = statement.with_for_update()
        counter = (await session.scalars(statement)).one()
        counter.value += 1

    async def worker() -> None:
        for _ in range(INCREMENTS):
            await increment()

    async with asyncio.TaskGroup() as group:
        for _ in range(WORKERS):
            group.create_task(worker())

    stats = async_db.transaction_stats()
    async with async_db.transaction() as session:
        counter = await session.get(Counter, 1)
        assert counter is not None
        final = counter.value
    print(
        f"\nlost update ({async_db.engine.dialect.name}, tasks, {strategy}): counter {final}, "
        f"{stats['retries']} retries"
    )
    assert final == WORKERS * INCREMENTS
    assert stats["committed"] == WORKERS * INCREMENTS
