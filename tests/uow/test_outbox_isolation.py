"""The relay and the inbox on a PostgreSQL server whose default isolation is REPEATABLE READ:
a relay round sees what another relay committed while it ran, and a concurrent delivery of one
event id to the inbox is skipped, not an error. Sync (threads) and async (tasks)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from dalkit import (
    AsyncDatabase,
    AsyncInbox,
    AsyncOutboxRelay,
    Database,
    Inbox,
    OutboxRelay,
    UnitOfWork,
)
from dalkit.outbox.messages import OutboxMessage
from dalkit.outbox.relay import RelayRound

from .conftest import with_driver
from .models import AccountCredited

EVENT_ID = "5c1e1f7e-1d8b-4c1e-9a51-1f1d2f3c4b5a"


@pytest.fixture
def repeatable_read_url(postgres_database_url: str) -> str:
    """A fresh database whose sessions begin REPEATABLE READ unless told otherwise."""
    name = make_url(postgres_database_url).database
    admin = Database(with_driver(postgres_database_url, "postgresql+psycopg"))
    try:
        admin.sql(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")
        admin.create_all()
    finally:
        admin.dispose()
    return postgres_database_url


@pytest.fixture
def other_relay(repeatable_read_url: str) -> Iterator[tuple[OutboxRelay, list[int]]]:
    """A sync relay on its own Database, with the amounts it published; one pending message."""
    db = Database(with_driver(repeatable_read_url, "postgresql+psycopg"))
    with UnitOfWork(db, outbox=True) as uow:
        uow.publish(AccountCredited(account_id=1, amount=1), aggregate=("Account", 1))
    published: list[int] = []
    try:
        yield OutboxRelay(db, Recorder(published)), published
    finally:
        db.dispose()


class Recorder:
    """A publisher keeping the amounts of what it published."""

    def __init__(self, published: list[int]) -> None:
        self.published = published

    def publish(self, message: OutboxMessage) -> None:
        self.published.append(int(message.payload["amount"]))


class AsyncRecorder(Recorder):
    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        self.published.append(int(message.payload["amount"]))


def run_between_begin_and_claim(engine: sa.Engine, relay: OutboxRelay) -> list[RelayRound]:
    """Have ``relay`` run a whole round once another relay's round on ``engine`` has begun
    (its snapshot taken, under REPEATABLE READ) and before it claims anything."""
    rounds: list[RelayRound] = []

    def after_execute(*args: Any) -> None:
        if args[2].startswith("DO $$") and not rounds:
            rounds.append(relay.run_once())

    event.listen(engine, "after_cursor_execute", after_execute)
    return rounds


def test_a_relay_round_sees_what_another_relay_committed_meanwhile(
    repeatable_read_url: str, other_relay: tuple[OutboxRelay, list[int]]
) -> None:
    first, first_published = other_relay
    db = Database(with_driver(repeatable_read_url, "postgresql+psycopg"))
    try:
        rounds = run_between_begin_and_claim(db.engine, first)
        published: list[int] = []
        assert OutboxRelay(db, Recorder(published)).run_once().idle
    finally:
        db.dispose()
    assert rounds == [RelayRound(published=1)]
    assert (first_published, published) == ([1], [])


async def test_an_async_relay_round_sees_what_another_relay_committed_meanwhile(
    repeatable_read_url: str, other_relay: tuple[OutboxRelay, list[int]]
) -> None:
    first, first_published = other_relay
    db = AsyncDatabase(with_driver(repeatable_read_url, "postgresql+asyncpg"))
    try:
        rounds = run_between_begin_and_claim(db.engine.sync_engine, first)
        published: list[int] = []
        assert (await AsyncOutboxRelay(db, AsyncRecorder(published)).run_once()).idle
    finally:
        await db.dispose()
    assert rounds == [RelayRound(published=1)]
    assert (first_published, published) == ([1], [])


def lock_waiters(db: Database) -> int:
    statement = "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    return int(db.sql(statement)[0]["n"])


def wait_for_a_lock_waiter(db: Database) -> None:
    deadline = time.monotonic() + 30
    while lock_waiters(db) == 0:
        assert time.monotonic() < deadline, "the second delivery never waited for the first"
        time.sleep(0.02)


def test_a_concurrent_delivery_of_one_event_id_is_skipped(repeatable_read_url: str) -> None:
    db = Database(with_driver(repeatable_read_url, "postgresql+psycopg"))
    inbox = Inbox(db, consumer="billing")
    claimed, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first_handler(session: Session) -> None:
        claimed.set()
        assert release.wait(30)

    def deliver(name: str, handler: Any) -> None:
        try:
            results[name] = inbox.process(EVENT_ID, handler)
        except Exception as error:  # reported by the test thread
            results[name] = error

    first = threading.Thread(target=deliver, args=("first", first_handler))
    second = threading.Thread(target=deliver, args=("second", lambda session: None))
    try:
        first.start()
        assert claimed.wait(30)
        second.start()
        wait_for_a_lock_waiter(db)  # the second claim waits for the first transaction
        release.set()
        first.join(30)
        second.join(30)
    finally:
        release.set()
        db.dispose()
    assert results == {"first": True, "second": False}


async def test_a_concurrent_async_delivery_of_one_event_id_is_skipped(
    repeatable_read_url: str,
) -> None:
    db = AsyncDatabase(with_driver(repeatable_read_url, "postgresql+asyncpg"))
    watcher = Database(with_driver(repeatable_read_url, "postgresql+psycopg"))
    inbox = AsyncInbox(db, consumer="billing")
    claimed, release = asyncio.Event(), asyncio.Event()

    async def first_handler(session: AsyncSession) -> None:
        claimed.set()
        await release.wait()

    async def second_handler(session: AsyncSession) -> None:
        pass

    try:
        first = asyncio.create_task(inbox.process(EVENT_ID, first_handler))
        await asyncio.wait_for(claimed.wait(), 30)
        second = asyncio.create_task(inbox.process(EVENT_ID, second_handler))
        await asyncio.to_thread(wait_for_a_lock_waiter, watcher)
        release.set()
        results = await asyncio.gather(first, second, return_exceptions=True)
    finally:
        release.set()
        watcher.dispose()
        await db.dispose()
    assert list(results) == [True, False]
