"""Fixtures for the unit-of-work tests: the sync and async databases of the test's backend with
the test tables and dalkit's own, an event bus that remembers what it delivered, and a publisher
that keeps the amounts of what it published."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from sqlalchemy.engine import make_url

from dalkit import AsyncDatabase, AsyncOutboxRelay, Database, DomainEvent, EventBus, OutboxRelay
from dalkit.outbox.messages import OutboxMessage
from dalkit.tables import metadata as dalkit_metadata

from .models import Base


class RecordingBus(EventBus):
    """An EventBus whose ``seen`` lists every event it dispatched, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[DomainEvent] = []
        self.subscribe(DomainEvent, self.seen.append)


class FailsFirst:
    """An event handler whose first call raises; ``calls`` counts them all."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: DomainEvent) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("first delivery fails")


class RoundFailures(logging.Handler):
    """Notes when each failed round of ``relay`` (either kind) was logged, and stops it at the
    third; listens to dalkit.outbox's log inside its ``with`` block."""

    def __init__(self, relay: OutboxRelay | AsyncOutboxRelay) -> None:
        super().__init__()
        self.relay = relay
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("outbox relay round failed"):
            self.times.append(time.monotonic())
            if len(self.times) == 3:
                self.relay.stop()

    def __enter__(self) -> RoundFailures:
        logging.getLogger("dalkit.outbox").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("dalkit.outbox").removeHandler(self)


class Amounts:
    """A publisher (sync and async) keeping the amounts of what it published, in order."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def publish(self, message: OutboxMessage) -> None:
        self.seen.append(int(message.payload["amount"]))


class AsyncAmounts(Amounts):
    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        self.seen.append(int(message.payload["amount"]))


@pytest.fixture
def database(table_copy: Callable[..., AbstractContextManager[str]]) -> Iterator[Database]:
    """A database of the test's backend with the test tables and dalkit's audit log, outbox
    and inbox (a copy: see ``table_copy``), disposed after the test."""
    with table_copy(Base.metadata, is_async=False) as url:
        db = Database(url)
        db.serves(Base.metadata, dalkit_metadata)  # what create_all would have recorded
        try:
            yield db
        finally:
            db.dispose()


@pytest.fixture
async def async_database(
    table_copy: Callable[..., AbstractContextManager[str]],
) -> AsyncIterator[AsyncDatabase]:
    with table_copy(Base.metadata, is_async=True) as url:
        db = AsyncDatabase(url)
        db.serves(Base.metadata, dalkit_metadata)  # as in ``database``
        try:
            yield db
        finally:
            await db.dispose()


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


def with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def pg_database(postgres_database_url: str) -> Iterator[Database]:
    """A Database (psycopg) on a fresh PostgreSQL database with the tables."""
    database = Database(with_driver(postgres_database_url, "postgresql+psycopg"))
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
async def pg_async_database(postgres_database_url: str) -> AsyncIterator[AsyncDatabase]:
    """An AsyncDatabase (asyncpg) on a fresh PostgreSQL database with the tables."""
    database = AsyncDatabase(with_driver(postgres_database_url, "postgresql+asyncpg"))
    await database.create_all(Base.metadata)
    try:
        yield database
    finally:
        await database.dispose()
