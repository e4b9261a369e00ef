"""The relays refuse, when made, a publisher they could not deliver through (no ``publish()``,
an EventBus, an async ``publish()`` for the sync relay): such a relay marked every message sent
with nothing delivered. The CLI's ``--publisher`` goes through the same check. So is a
``RelayBackoff`` that cannot make a retry time."""

from __future__ import annotations

import re

import pytest

import dalkit
from dalkit import (
    AsyncDatabase,
    AsyncOutboxRelay,
    ConfigurationError,
    Database,
    EventBus,
    OutboxMessage,
    OutboxRelay,
    UnitOfWork,
)
from dalkit.outbox import RelayBackoff

from .models import UserRegistered


class AsyncPrinter:
    async def publish(self, message: OutboxMessage) -> None:
        raise AssertionError("never awaited by the sync relay")


class SyncPrinter:
    def publish(self, message: OutboxMessage) -> None:
        pass


NOT_PUBLISHERS = {
    "no publish()": (object(), "no publish() method"),
    "an EventBus": (EventBus(), "EventBusPublisher(bus)"),
}


@pytest.mark.parametrize("case", sorted(NOT_PUBLISHERS))
async def test_both_relays_refuse_what_cannot_publish(sqlite_url: str, case: str) -> None:
    publisher, text = NOT_PUBLISHERS[case]
    said = re.escape(text)
    with Database(sqlite_url) as db, pytest.raises(ConfigurationError, match=said):
        OutboxRelay(db, publisher)  # type: ignore[arg-type]
    async with AsyncDatabase(sqlite_url) as adb:
        with pytest.raises(ConfigurationError, match=said):
            AsyncOutboxRelay(adb, publisher)  # type: ignore[arg-type]


def test_the_sync_relay_refuses_an_async_publisher_and_sends_nothing(sqlite_url: str) -> None:
    with Database(sqlite_url) as db:
        db.create_all(dalkit.metadata)
        with UnitOfWork(db, outbox=True) as uow:
            uow.publish(UserRegistered(email="a@example.com"))
        with pytest.raises(ConfigurationError, match="async publisher"):
            OutboxRelay(db, AsyncPrinter())  # type: ignore[arg-type]
        assert db.sql("SELECT count(*) AS n FROM dalkit_outbox WHERE sent_at IS NULL") == [{"n": 1}]
        OutboxRelay(db, SyncPrinter())  # a sync one is fine


async def test_the_async_relay_takes_an_async_publisher(sqlite_url: str) -> None:
    async with AsyncDatabase(sqlite_url) as db:
        AsyncOutboxRelay(db, AsyncPrinter())


@pytest.mark.parametrize(
    "fields",
    [
        {"max_delay": float("inf")},  # 48 failures in, the retry time overflowed (OverflowError)
        {"max_delay": 1e12},
        {"base_delay": -1.0},  # retried before it failed, with no backoff
        {"jitter": 2.0},
        {"base_delay": float("nan")},
    ],
)
def test_a_backoff_that_cannot_make_a_retry_time_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="RelayBackoff"):
        RelayBackoff(**fields)
