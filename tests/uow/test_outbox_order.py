"""The outbox's ordering guarantee on PostgreSQL: two units of work writing events of one
aggregate at the same time are serialised, so the relay publishes the events in commit order and
never one whose predecessor is still uncommitted. Sync (threads) and async (tasks)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from dalkit import (
    AsyncDatabase,
    AsyncOutboxRelay,
    AsyncUnitOfWork,
    Database,
    OutboxRelay,
    UnitOfWork,
)

from .conftest import Amounts, AsyncAmounts
from .models import AccountCredited

AGGREGATE = ("Account", "1")

#: sessions of this test's database waiting for a lock: the second unit of work, once it
#: waits for the first's hold on the aggregate
LOCK_WAITERS = (
    "SELECT count(*) AS n FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)
#: how long the second unit of work may take to reach the lock on a loaded machine
WAIT = 30.0


async def test_concurrent_units_of_work_of_one_aggregate_publish_in_commit_order_async(
    pg_async_database: AsyncDatabase,
) -> None:
    db = pg_async_database
    first_wrote = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with db.transaction():
            async with AsyncUnitOfWork(db, outbox=True) as uow:
                uow.publish(AccountCredited(account_id=1, amount=1), aggregate=AGGREGATE)
            first_wrote.set()  # its outbox row is written, its transaction still open
            await release_first.wait()

    async def second() -> None:
        await first_wrote.wait()
        async with AsyncUnitOfWork(db, outbox=True) as uow:
            uow.publish(AccountCredited(account_id=1, amount=2), aggregate=AGGREGATE)

    publisher = AsyncAmounts()
    relay = AsyncOutboxRelay(db, publisher)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_wrote.wait()
    # until the second waits on the lock (half a second of sleep may end before it got there
    # on a loaded machine, and the order then asserted nothing)
    deadline = time.monotonic() + WAIT
    while (await db.sql(LOCK_WAITERS))[0]["n"] == 0:
        assert time.monotonic() < deadline, "the second unit of work never waited for the first"
        assert not tasks[1].done(), "the second unit of work did not wait for the first"
        await asyncio.sleep(0.02)
    assert not tasks[1].done()  # the second waits for the first to end
    assert (await relay.run_once()).published == 0
    release_first.set()
    await asyncio.gather(*tasks)
    assert (await relay.run_once()).published == 2
    assert publisher.seen == [1, 2]


def test_concurrent_units_of_work_of_one_aggregate_publish_in_commit_order(
    pg_database: Database,
) -> None:
    db = pg_database
    first_wrote = threading.Event()
    release_first = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.transaction():
                with UnitOfWork(db, outbox=True) as uow:
                    uow.publish(AccountCredited(account_id=1, amount=1), aggregate=AGGREGATE)
                first_wrote.set()
                assert release_first.wait(30)
        except BaseException as error:  # reported by the test thread
            errors.append(error)
            first_wrote.set()

    def second() -> None:
        try:
            assert first_wrote.wait(30)
            with UnitOfWork(db, outbox=True) as uow:
                uow.publish(AccountCredited(account_id=1, amount=2), aggregate=AGGREGATE)
        except BaseException as error:
            errors.append(error)
        finally:
            second_done.set()

    publisher = Amounts()
    relay = OutboxRelay(db, publisher)
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert first_wrote.wait(30)
    # until the second waits on the lock (half a second may end before it got there on a
    # loaded machine, and the order then asserted nothing)
    deadline = time.monotonic() + WAIT
    while db.sql(LOCK_WAITERS)[0]["n"] == 0:
        assert time.monotonic() < deadline, "the second unit of work never waited for the first"
        assert not second_done.is_set(), "the second unit of work did not wait for the first"
        time.sleep(0.02)
    assert not second_done.is_set()  # the second waits for the first to end
    assert relay.run_once().published == 0
    release_first.set()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert relay.run_once().published == 2
    assert publisher.seen == [1, 2]
