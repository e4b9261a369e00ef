"""A unit of work inside ``@db.transactional``: a retry after a real serialization failure
keeps one set of audit rows, events and outbox rows; concurrent async requests keep their own
actors. Written out for both APIs, since they need real concurrency and a real conflict. Also
what the log and the outbox cannot keep: an audit name, an aggregate id too long for them."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from dalkit import (
    AsyncDatabase,
    AsyncUnitOfWork,
    ConfigurationError,
    Database,
    UnitOfWork,
    UnitOfWorkError,
    audit,
)
from dalkit.audit.registry import model_audit
from dalkit.tables import audit_log, outbox

from .conftest import RecordingBus
from .models import Account, AccountCredited, Note, User


def bump_concurrently(url: str) -> None:
    """Commit a change to account 1 from another connection, outside any pool under test."""
    plain = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as other:
        other.execute("UPDATE uow_accounts SET balance = balance + 100 WHERE id = 1")


def seed_account(db: Database) -> None:
    with UnitOfWork(db) as uow:
        uow.session.add(Account(id=1, owner="ada", balance=0))


def leftovers(db: Database) -> tuple[list[Any], int]:
    with db.session() as session:
        updates = session.execute(
            sa.select(audit_log.c.changes, audit_log.c.actor_id).where(
                audit_log.c.action == "update"
            )
        ).all()
        outbox_rows = session.execute(sa.select(sa.func.count()).select_from(outbox)).scalar()
    return [tuple(row) for row in updates], int(outbox_rows or 0)


def test_a_retry_after_a_serialization_failure_keeps_one_set_of_audit_rows_events_and_outbox(
    pg_database: Database,
) -> None:
    seed_account(pg_database)
    bus = RecordingBus()
    attempts: list[int] = []
    committed: list[str] = []
    rolled_back: list[str] = []

    @pg_database.transactional(isolation="REPEATABLE READ")
    def credit(amount: int) -> None:
        attempts.append(amount)
        with UnitOfWork(pg_database, actor="teller", event_bus=bus) as uow:
            uow.hooks.after_commit(lambda unit: committed.append("credit"))
            uow.hooks.after_rollback(lambda unit: rolled_back.append("credit"))
            account = uow.session.get(Account, 1)
            assert account is not None  # the snapshot is taken: a later change conflicts
            if len(attempts) == 1:
                bump_concurrently(str(pg_database.engine.url.render_as_string(False)))
            account.balance += amount
            account.record_event(AccountCredited(account_id=1, amount=amount))
        with UnitOfWork(pg_database, outbox=True) as uow:
            uow.publish(AccountCredited(account_id=1, amount=amount), aggregate=account)

    credit(10)

    assert len(attempts) == 2  # the first attempt failed with a serialization error
    updates, outbox_rows = leftovers(pg_database)
    assert updates == [({"balance": {"old": 100, "new": 110}}, "teller")]
    assert outbox_rows == 1
    assert [e.amount for e in bus.seen if isinstance(e, AccountCredited)] == [10]
    assert committed == ["credit"]
    assert rolled_back == ["credit"]  # the failed attempt's


async def test_a_retry_after_a_serialization_failure_keeps_one_set_async(
    pg_async_database: AsyncDatabase,
) -> None:
    db = pg_async_database
    async with AsyncUnitOfWork(db) as uow:
        uow.session.add(Account(id=1, owner="ada", balance=0))
    bus = RecordingBus()
    attempts: list[int] = []

    @db.transactional(isolation="REPEATABLE READ")
    async def credit(amount: int) -> None:
        attempts.append(amount)
        async with AsyncUnitOfWork(db, actor="teller", event_bus=bus) as uow:
            account = await uow.session.get(Account, 1)
            assert account is not None
            if len(attempts) == 1:
                await asyncio.to_thread(bump_concurrently, db.engine.url.render_as_string(False))
            account.balance += amount
            account.record_event(AccountCredited(account_id=1, amount=amount))
        async with AsyncUnitOfWork(db, outbox=True) as uow:
            uow.publish(AccountCredited(account_id=1, amount=amount), aggregate=("Account", 1))

    await credit(10)

    assert len(attempts) == 2
    async with db.session() as session:
        updates = (
            (
                await session.execute(
                    sa.select(audit_log.c.changes).where(audit_log.c.action == "update")
                )
            )
            .scalars()
            .all()
        )
        outbox_rows = (
            await session.execute(sa.select(sa.func.count()).select_from(outbox))
        ).scalar()
    assert updates == [{"balance": {"old": 100, "new": 110}}]
    assert outbox_rows == 1
    assert [e.amount for e in bus.seen if isinstance(e, AccountCredited)] == [10]


async def test_concurrent_async_requests_are_each_recorded_with_their_own_actor(
    async_database: AsyncDatabase,
) -> None:
    both_started = asyncio.Barrier(2)

    async def request(actor_id: str, use_context: bool) -> None:
        if use_context:
            with audit.actor(actor_id, request_id=f"req-{actor_id}"):
                await both_started.wait()  # the other request's actor is set too by now
                async with AsyncUnitOfWork(async_database) as uow:
                    uow.session.add(User(email=f"{actor_id}@example.com", name=actor_id))
        else:
            async with AsyncUnitOfWork(
                async_database, actor=actor_id, request_id=f"req-{actor_id}"
            ) as uow:
                await both_started.wait()
                uow.session.add(User(email=f"{actor_id}@example.com", name=actor_id))

    await asyncio.gather(request("alice", True), request("bob", False))
    async with async_database.session() as session:
        rows = (
            await session.execute(
                sa.select(audit_log.c.changes, audit_log.c.actor_id, audit_log.c.request_id)
            )
        ).all()
    recorded = {changes["name"]: (actor, request) for changes, actor, request in rows}
    assert recorded == {"alice": ("alice", "req-alice"), "bob": ("bob", "req-bob")}


def test_an_audit_name_longer_than_the_log_keeps_is_refused_when_registered() -> None:
    longest = audit.ENTITY_KEY_MAX
    with pytest.raises(ConfigurationError, match=f"at most {longest}"):
        audit.register(Note, name="n" * (longest + 1))
    assert model_audit(Note) is None  # nothing was registered


def test_an_aggregate_id_longer_than_the_outbox_keeps_is_refused_when_published(
    database: Database,
) -> None:
    # PostgreSQL refused the outbox row at the flush with a bare DatabaseError; SQLite kept it
    longest = 200  # the width of dalkit_outbox.aggregate_id
    with UnitOfWork(database, outbox=True) as uow:
        with pytest.raises(UnitOfWorkError, match=f"at most {longest}"):
            too_long = ("A", "k" * (longest + 1))
            uow.publish(AccountCredited(account_id=1, amount=5), aggregate=too_long)
        uow.publish(AccountCredited(account_id=1, amount=7), aggregate=("A", "k" * longest))
    with database.transaction() as session:
        assert session.scalars(sa.select(outbox.c.aggregate_id)).all() == ["k" * longest]
