"""Several relays on PostgreSQL share the outbox: a relay locks only the aggregates whose
messages it claims in its round, so another relay running meanwhile publishes the other due
aggregates instead of finding every head locked. Sync and async."""

from __future__ import annotations

from dalkit import AsyncDatabase, AsyncOutboxRelay, Database, OutboxRelay, UnitOfWork
from dalkit.outbox.messages import OutboxMessage
from dalkit.outbox.relay import RelayRound
from dalkit.outbox.relay_async import RelayRound as AsyncRelayRound

from .conftest import Amounts, AsyncAmounts, with_driver
from .models import AccountCredited

# in id order: two messages of account 1, then one of account 2 and one of account 3
WRITES = ((1, 1), (1, 2), (2, 3), (3, 4))


def write_outbox(db: Database) -> None:
    for account, amount in WRITES:
        with UnitOfWork(db, outbox=True) as uow:
            uow.publish(
                AccountCredited(account_id=account, amount=amount), aggregate=("Account", account)
            )


class RunsAnotherRelayFirst(Amounts):
    """A publisher that, before its first publish, has another relay run a whole round: what
    that relay does while this one holds its round's locks."""

    def __init__(self, other: OutboxRelay) -> None:
        super().__init__()
        self.other = other
        self.other_rounds: list[RelayRound] = []

    def publish(self, message: OutboxMessage) -> None:
        if not self.other_rounds:
            self.other_rounds.append(self.other.run_once())
        super().publish(message)


def test_a_relay_publishes_the_aggregates_another_relays_round_does_not_claim(
    postgres_database_url: str, pg_database: Database
) -> None:
    write_outbox(pg_database)
    other_db = Database(with_driver(postgres_database_url, "postgresql+psycopg"))
    try:
        other = Amounts()
        publisher = RunsAnotherRelayFirst(OutboxRelay(other_db, other, batch_size=2))
        first = OutboxRelay(pg_database, publisher, batch_size=2).run_once()
    finally:
        other_db.dispose()
    # the first relay claimed account 1's two messages; the other took accounts 2 and 3
    assert (first, publisher.seen) == (RelayRound(published=2), [1, 2])
    assert (publisher.other_rounds, other.seen) == ([RelayRound(published=2)], [3, 4])


class AsyncRunsAnotherRelayFirst(Amounts):
    """`RunsAnotherRelayFirst` for async relays."""

    def __init__(self, other: AsyncOutboxRelay) -> None:
        super().__init__()
        self.other = other
        self.other_rounds: list[AsyncRelayRound] = []

    async def publish(self, message: OutboxMessage) -> None:  # type: ignore[override]
        if not self.other_rounds:
            self.other_rounds.append(await self.other.run_once())
        super().publish(message)


async def test_an_async_relay_publishes_the_aggregates_another_relays_round_does_not_claim(
    postgres_database_url: str, pg_database: Database, pg_async_database: AsyncDatabase
) -> None:
    write_outbox(pg_database)
    other_db = AsyncDatabase(with_driver(postgres_database_url, "postgresql+asyncpg"))
    try:
        other = AsyncAmounts()
        publisher = AsyncRunsAnotherRelayFirst(AsyncOutboxRelay(other_db, other, batch_size=2))
        first = await AsyncOutboxRelay(pg_async_database, publisher, batch_size=2).run_once()
    finally:
        await other_db.dispose()
    assert (first, publisher.seen) == (AsyncRelayRound(published=2), [1, 2])
    assert (publisher.other_rounds, other.seen) == ([AsyncRelayRound(published=2)], [3, 4])
