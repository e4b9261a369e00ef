"""Two transactions writing one audited row at the same time through UPDATE statements, on
PostgreSQL under READ COMMITTED: each audit entry holds the change of its own statement only.
The second statement's before-image is read once the first transaction has committed (it is a
locking read), not before, when the statement would then write on top of the other's change and
its entry claim that change too."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest
import sqlalchemy as sa

from dalkit import AsyncDatabase, AsyncUnitOfWork, Database, UnitOfWork, audit

from .models import Gadget

# pg_stat_activity is read once per transaction unless its snapshot is cleared first
FRESH_ACTIVITY = "SELECT pg_stat_clear_snapshot()"
WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


@pytest.fixture
def pg(database: Database) -> Database:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    with UnitOfWork(database, actor="setup") as uow:
        uow.session.add(Gadget(id=1, sku="s", name="a"))
    return database


@pytest.fixture
async def pg_async(async_database: AsyncDatabase) -> AsyncDatabase:
    if async_database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    async with AsyncUnitOfWork(async_database, actor="setup") as uow:
        uow.session.add(Gadget(id=1, sku="s", name="a"))
    return async_database


def changes_by_actor(db: Database) -> dict[str | None, dict[str, object]]:
    with db.session() as session:
        return {e.actor_id: e.changes for e in audit.history(session, Gadget, 1)[1:]}


def test_an_update_statement_records_its_own_change_not_a_concurrent_transactions(
    pg: Database,
) -> None:
    renamed = threading.Event()

    def rename() -> None:
        with UnitOfWork(pg, actor="renamer") as uow:
            uow.session.execute(sa.update(Gadget).where(Gadget.id == 1).values(name="z"))
        renamed.set()

    with UnitOfWork(pg, actor="restocker") as uow:
        uow.session.execute(sa.update(Gadget).where(Gadget.id == 1).values(sku="s2"))
        renamer = threading.Thread(target=rename)
        renamer.start()
        deadline = time.monotonic() + 30
        while not pg.sql(WAITING_FOR_A_LOCK)[0]["count"] and time.monotonic() < deadline:
            time.sleep(0.02)
            pg.sql(FRESH_ACTIVITY)  # the renamer waits for this transaction's row lock
        assert not renamed.is_set()
    renamer.join(timeout=30)
    assert renamed.is_set()
    assert changes_by_actor(pg) == {
        "restocker": {"sku": {"old": "s", "new": "s2"}},
        "renamer": {"name": {"old": "a", "new": "z"}},
    }


async def test_an_update_statement_records_its_own_change_not_a_concurrent_transactions_async(
    pg_async: AsyncDatabase,
) -> None:
    async def rename() -> None:
        async with AsyncUnitOfWork(pg_async, actor="renamer") as uow:
            await uow.session.execute(sa.update(Gadget).where(Gadget.id == 1).values(name="z"))

    async with AsyncUnitOfWork(pg_async, actor="restocker") as uow:
        await uow.session.execute(sa.update(Gadget).where(Gadget.id == 1).values(sku="s2"))
        # a context of its own: the task is not part of this unit's transaction
        renamer = asyncio.create_task(rename(), context=contextvars.Context())
        for _ in range(1500):  # the renamer waits for this transaction's row lock
            if (await pg_async.sql(WAITING_FOR_A_LOCK))[0]["count"]:
                break
            await asyncio.sleep(0.02)
            await pg_async.sql(FRESH_ACTIVITY)
        assert not renamer.done()
    await asyncio.wait_for(renamer, 30)
    async with pg_async.session() as session:
        entries = await audit.history_async(session, Gadget, 1)
    assert {e.actor_id: e.changes for e in entries[1:]} == {
        "restocker": {"sku": {"old": "s", "new": "s2"}},
        "renamer": {"name": {"old": "a", "new": "z"}},
    }
