"""The relay's ``run_forever`` outlives a COMMIT whose outcome is unknown (its connection ended
during it): the message was published, may or may not be marked sent, and the next round reads
which and publishes again what is still pending (at least once). It outlives as well a
connection ended while a message's savepoint is released (a publisher that shares the round's
transaction): the round fails with the lost connection and is tried again. PostgreSQL, whose
backend a second connection ends; sync and async. A round larger than a statement's bind
parameters allow (asyncpg: 32767) still marks what it published sent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from dalkit import (
    AsyncDatabase,
    AsyncOutboxRelay,
    AsyncUnitOfWork,
    Database,
    OutboxMessage,
    OutboxRelay,
    UnitOfWork,
)
from dalkit.tables import outbox

from .models import AccountCredited

pytestmark = pytest.mark.postgres


class Sent:
    def __init__(self, shares_transaction: bool) -> None:
        self.event_ids: list[str] = []
        # True: each publish in a savepoint, whose release is the first commit ended below
        self.shares_transaction = shares_transaction

    def publish(self, message: OutboxMessage) -> None:
        self.event_ids.append(message.event_id)


class AsyncSent(Sent):
    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        self.event_ids.append(message.event_id)


@contextmanager
def commit_ended_once(url: sa.URL, is_relays: Callable[[], bool]) -> Iterator[list[bool]]:
    """End the backend of the first relay session to commit, from another connection, just
    before its COMMIT; yields a list that is emptied when that happened."""
    killer = sa.create_engine(url.set(drivername="postgresql+psycopg"), poolclass=sa.pool.NullPool)
    armed = [True]

    def end_own_backend(session: sa.orm.Session) -> None:
        if armed and is_relays():
            armed.clear()
            pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with killer.connect() as connection:
                connection.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                connection.commit()

    sa.event.listen(sa.orm.Session, "before_commit", end_own_backend)
    try:
        yield armed
    finally:
        sa.event.remove(sa.orm.Session, "before_commit", end_own_backend)
        killer.dispose()


def _pending(db: Database) -> int:
    with db.session() as session:
        found = session.scalar(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        )
    return int(found or 0)


SHARING = pytest.mark.parametrize("shares", [False, True], ids=["commit", "savepoint"])


@SHARING
def test_run_forever_outlives_a_commit_whose_outcome_is_unknown(
    database: Database, shares: bool
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("a backend is ended from another connection on PostgreSQL")
    event = AccountCredited(account_id=1, amount=10)
    with UnitOfWork(database, outbox=True) as uow:
        uow.publish(event, aggregate=("Account", 1))
    sent = Sent(shares)
    relay = OutboxRelay(database, sent, poll_interval=0.05)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            relay.run_forever()
        except BaseException as error:
            failed.append(error)

    worker = threading.Thread(target=run)
    relays = lambda: threading.current_thread() is worker  # noqa: E731
    with commit_ended_once(database.engine.url, relays) as armed:
        worker.start()
        deadline = time.monotonic() + 30  # the relay's retry after the fault, on a loaded machine
        while (armed or _pending(database)) and time.monotonic() < deadline:
            time.sleep(0.05)
        relay.stop()
        worker.join(10)
    assert not armed  # the fault happened
    assert failed == []
    assert _pending(database) == 0
    assert set(sent.event_ids) == {event.event_id}


@SHARING
async def test_async_run_forever_outlives_a_commit_whose_outcome_is_unknown(
    async_database: AsyncDatabase, shares: bool
) -> None:
    if async_database.engine.dialect.name != "postgresql":
        pytest.skip("a backend is ended from another connection on PostgreSQL")
    event = AccountCredited(account_id=1, amount=10)
    async with AsyncUnitOfWork(async_database, outbox=True) as uow:
        uow.publish(event, aggregate=("Account", 1))
    sent = AsyncSent(shares)
    relay = AsyncOutboxRelay(async_database, sent, poll_interval=0.05)
    running: asyncio.Task[Any] | None = None

    def relays() -> bool:
        return running is not None and asyncio.current_task() is running

    async def pending() -> int:
        async with async_database.session() as session:
            found = await session.scalar(
                sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            )
        return int(found or 0)

    with commit_ended_once(async_database.engine.url, relays) as armed:
        running = asyncio.create_task(relay.run_forever())
        for _ in range(600):  # up to 30 s: the relay's retry after the fault, on a loaded machine
            if not (armed or await pending()):
                break
            await asyncio.sleep(0.05)
        relay.stop()
        await asyncio.wait_for(running, 10)  # returned: it did not die on the error
    assert not armed
    assert await pending() == 0
    assert set(sent.event_ids) == {event.event_id}


@pytest.mark.slow
async def test_a_round_of_more_messages_than_a_statement_may_bind_marks_them_all_sent(
    pg_async_database: AsyncDatabase,
) -> None:
    # one aggregate: the round publishes them all, then marked none sent (the UPDATE's IN list
    # passed asyncpg's 32767 parameters) and the next round published them all again
    count = 32_800
    async with AsyncUnitOfWork(pg_async_database, outbox=True) as uow:
        for amount in range(count):
            uow.publish(AccountCredited(account_id=1, amount=amount), aggregate=("Account", 1))
    sent = AsyncSent(shares_transaction=False)
    relay = AsyncOutboxRelay(pg_async_database, sent, batch_size=count)
    assert (await relay.run_once()).published == count
    assert (await relay.run_once()).idle
    assert len(sent.event_ids) == count
    assert (await relay.status()).pending == 0
