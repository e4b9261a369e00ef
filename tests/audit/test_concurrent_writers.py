"""Two transactions writing one audited row at the same time through UPDATE statements, on
PostgreSQL under READ COMMITTED: each audit entry holds the change of its own statement only.
The second statement's before-image is read once the first transaction has committed (it is a
locking read), not before, when the statement would then write on top of the other's change and
its entry claim that change too. A row that another transaction makes match a statement's WHERE
after its before-image was read is left alone by the statement, not written unrecorded; so is
a row that another transaction inserts after an ORM bulk UPDATE by primary key (which fails) or
a repository's bulk_update (which skips it) read the rows of the keys they name. An upsert
whose conflicting row another transaction inserts after its read records an update of that
row (DO UPDATE), or nothing (DO NOTHING), never its creation."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm.exc import StaleDataError

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    AsyncUnitOfWork,
    Database,
    Repository,
    UnitOfWork,
    audit,
)

from .models import Counter, Gadget

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


# the audited statements, each over the counters whose n is 0
COUNTERS = typing.cast("sa.Table", Counter.__table__)
STATEMENTS: dict[str, Callable[[], Any]] = {
    "core": lambda: sa.update(COUNTERS).where(COUNTERS.c.n == 0).values(n=1),
    "orm": lambda: sa.update(Counter).where(Counter.n == 0).values(n=1),
    "delete": lambda: sa.delete(Counter).where(Counter.n == 0),
}


def make_a_row_match_before_the_statement(engine: sa.Engine, interlope: object) -> None:
    """Run ``interlope`` (which commits counter 2's n = 0 in another transaction) once, between
    the before-image's read and the statement the audit records."""

    done = threading.Event()

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        written = statement.lstrip().upper()
        audited = written.startswith(("UPDATE AUDIT_COUNTERS", "DELETE FROM AUDIT_COUNTERS"))
        if audited and not done.is_set():
            done.set()  # the other transaction's own statement comes here too
            other = threading.Thread(target=interlope)  # type: ignore[arg-type]
            other.start()
            other.join(timeout=30)

    event.listen(engine, "before_cursor_execute", before)


def counters_and_writers(db: Database) -> tuple[list[tuple[int, int]], dict[int, list[str]]]:
    """The counters left, and the actors the log names for each one."""
    with db.session() as session:
        left = session.execute(sa.select(Counter.id, Counter.n).order_by(Counter.id)).all()
        actors = {i: [e.actor_id or "" for e in audit.history(session, Counter, i)] for i in (1, 2)}
    return [tuple(r) for r in left], actors  # type: ignore[misc]


@pytest.mark.parametrize("kind", list(STATEMENTS))
def test_a_row_that_newly_matches_a_statement_is_not_written_unrecorded(
    database: Database, kind: str
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    with UnitOfWork(database, actor="setup") as uow:
        uow.session.add_all([Counter(id=1, n=0), Counter(id=2, n=5)])

    def interlope() -> None:
        with UnitOfWork(database, actor="other") as uow:
            uow.session.execute(sa.update(Counter).where(Counter.id == 2).values(n=0))

    make_a_row_match_before_the_statement(database.engine, interlope)
    with UnitOfWork(database, actor="me") as uow:
        written = uow.session.execute(STATEMENTS[kind]())
    assert written.rowcount == 1  # type: ignore[attr-defined]
    left, actors = counters_and_writers(database)
    # counter 2 matched only after the before-image was read: the statement leaves it alone
    assert left == ([(2, 0)] if kind == "delete" else [(1, 1), (2, 0)])
    assert actors == {1: ["setup", "me"], 2: ["setup", "other"]}


@pytest.mark.parametrize("kind", list(STATEMENTS))
async def test_a_row_that_newly_matches_a_statement_is_not_written_unrecorded_async(
    async_database: AsyncDatabase, kind: str
) -> None:
    if async_database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    async with AsyncUnitOfWork(async_database, actor="setup") as uow:
        uow.session.add_all([Counter(id=1, n=0), Counter(id=2, n=5)])
    url = async_database.engine.url.set(drivername="postgresql+psycopg")
    other = Database(url.render_as_string(hide_password=False))
    try:

        def interlope() -> None:
            with UnitOfWork(other, actor="other") as uow:
                uow.session.execute(sa.update(Counter).where(Counter.id == 2).values(n=0))

        make_a_row_match_before_the_statement(async_database.engine.sync_engine, interlope)
        async with AsyncUnitOfWork(async_database, actor="me") as uow:
            written = await uow.session.execute(STATEMENTS[kind]())
        assert written.rowcount == 1  # type: ignore[attr-defined]
        left, actors = counters_and_writers(other)
    finally:
        other.dispose()
    assert left == ([(2, 0)] if kind == "delete" else [(1, 1), (2, 0)])
    assert actors == {1: ["setup", "me"], 2: ["setup", "other"]}


def after_the_locked_read_of(table: str, engine: sa.Engine, interlope: Callable[[], None]) -> None:
    """Run ``interlope`` (another transaction) once, to its end, right after the first read of
    ``table`` ``FOR UPDATE`` on ``engine``."""
    done = threading.Event()

    def after(conn: object, cursor: object, statement: str, *args: object) -> None:
        read = statement.upper()
        if f"FROM {table.upper()}" in read and "FOR UPDATE" in read and not done.is_set():
            done.set()
            thread = threading.Thread(target=interlope)
            thread.start()
            thread.join(timeout=30)

    event.listen(engine, "after_cursor_execute", after)


def insert_a_row_after_the_before_image(engine: sa.Engine, other: Database) -> None:
    """Commit a new counter 2 through ``other`` in another transaction once, right after the
    audit's locked before-image read of the counters."""

    def interlope() -> None:
        with UnitOfWork(other, actor="other") as uow:
            uow.session.add(Counter(id=2, n=0))

    after_the_locked_read_of("audit_counters", engine, interlope)


@contextlib.contextmanager
def counter_1_and_a_sync_twin(db: AsyncDatabase) -> Iterator[Database]:
    """A sync Database on ``db``'s PostgreSQL database (with counter 1 in it), for the other
    transaction and the checks; the async engine's statements insert counter 2 through it."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    url = db.engine.url.set(drivername="postgresql+psycopg")
    other = Database(url.render_as_string(hide_password=False))
    try:
        with UnitOfWork(other, actor="setup") as uow:
            uow.session.add(Counter(id=1, n=0))
        insert_a_row_after_the_before_image(db.engine.sync_engine, other)
        yield other
    finally:
        other.dispose()


def counter_1_and_an_interloper(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    with UnitOfWork(db, actor="setup") as uow:
        uow.session.add(Counter(id=1, n=0))
    insert_a_row_after_the_before_image(db.engine, db)


BY_PRIMARY_KEY = [{"id": 1, "n": 1}, {"id": 2, "n": 1}]
# counter 2 was not there at the read: nothing could record its update, nothing is written
NOTHING_WRITTEN = ([(1, 0), (2, 0)], {1: ["setup"], 2: ["other"]})
# counter 2 was not there at the read: skipped, as a key that matches no row is
ONLY_COUNTER_1 = ([(1, 1), (2, 0)], {1: ["setup", "me"], 2: ["other"]})


def test_a_bulk_update_by_primary_key_does_not_write_a_row_inserted_after_its_read(
    database: Database,
) -> None:
    counter_1_and_an_interloper(database)
    with pytest.raises(StaleDataError, match="expected to update 2 row"):
        with UnitOfWork(database, actor="me") as uow:
            uow.session.execute(sa.update(Counter), BY_PRIMARY_KEY)
    assert counters_and_writers(database) == NOTHING_WRITTEN


async def test_a_bulk_update_by_primary_key_does_not_write_a_row_inserted_after_its_read_async(
    async_database: AsyncDatabase,
) -> None:
    with counter_1_and_a_sync_twin(async_database) as other:
        # asyncpg counts no row of an executemany: SQLAlchemy alone would not raise
        with pytest.raises(StaleDataError, match="expected to update 2 row"):
            async with AsyncUnitOfWork(async_database, actor="me") as uow:
                await uow.session.execute(sa.update(Counter), BY_PRIMARY_KEY)
        assert counters_and_writers(other) == NOTHING_WRITTEN


def test_a_bulk_update_by_primary_key_naming_a_missing_row_writes_nothing(
    database: Database,
) -> None:
    with UnitOfWork(database, actor="setup") as uow:
        uow.session.add(Counter(id=1, n=0))
    with UnitOfWork(database, actor="me") as uow:
        with pytest.raises(StaleDataError):
            uow.session.execute(sa.update(Counter), BY_PRIMARY_KEY)
        # caught and committed: counter 1 is not left updated with no entry
    assert counters_and_writers(database) == ([(1, 0)], {1: ["setup"], 2: []})


class Counters(Repository[Counter]):
    pass


class AsyncCounters(AsyncRepository[Counter]):
    pass


def test_bulk_update_does_not_write_a_row_inserted_after_its_read(database: Database) -> None:
    counter_1_and_an_interloper(database)
    with UnitOfWork(database, actor="me") as uow:
        assert uow.repository(Counters).bulk_update(BY_PRIMARY_KEY) == 1
    assert counters_and_writers(database) == ONLY_COUNTER_1


async def test_bulk_update_does_not_write_a_row_inserted_after_its_read_async(
    async_database: AsyncDatabase,
) -> None:
    with counter_1_and_a_sync_twin(async_database) as other:
        async with AsyncUnitOfWork(async_database, actor="me") as uow:
            assert await uow.repository(AsyncCounters).bulk_update(BY_PRIMARY_KEY) == 1
        assert counters_and_writers(other) == ONLY_COUNTER_1


def counter_2_entries(db: Database) -> list[tuple[str, str | None, dict[str, Any]]]:
    with db.session() as session:
        return [(e.action, e.actor_id, e.changes) for e in audit.history(session, Counter, 2)]


# counter 2 was inserted by the other transaction after the upsert's read: its creation is not
# this one's (it was recorded twice, the second time as "me"'s)
LEFT_TO_THE_OTHER = ([(1, 0), (2, 0)], {1: ["setup"], 2: ["other"]})
# and DO UPDATE updated it: an update from the other's values (recorded as a creation)
UPDATED_BY_ME = ("update", "me", {"n": {"old": 0, "new": 1}})


def test_an_upsert_does_not_record_a_row_inserted_after_its_read_as_its_own(
    database: Database,
) -> None:
    counter_1_and_an_interloper(database)
    with UnitOfWork(database, actor="me") as uow:
        uow.session.execute(insert(Counter).values(id=2, n=1).on_conflict_do_nothing())
    assert counters_and_writers(database) == LEFT_TO_THE_OTHER


def test_a_repository_upsert_records_an_update_of_a_row_inserted_after_its_read(
    database: Database,
) -> None:
    counter_1_and_an_interloper(database)
    with UnitOfWork(database, actor="me") as uow:
        assert uow.repository(Counters).upsert({"id": 2, "n": 1}, on=["id"]).n == 1
    assert counter_2_entries(database) == [("create", "other", {"id": 2, "n": 0}), UPDATED_BY_ME]


async def test_a_repository_upsert_records_an_update_of_a_row_inserted_after_its_read_async(
    async_database: AsyncDatabase,
) -> None:
    with counter_1_and_a_sync_twin(async_database) as other:
        async with AsyncUnitOfWork(async_database, actor="me") as uow:
            stored = await uow.repository(AsyncCounters).upsert({"id": 2, "n": 1}, on=["id"])
            assert stored.n == 1
        assert counter_2_entries(other) == [("create", "other", {"id": 2, "n": 0}), UPDATED_BY_ME]


def test_an_executemany_upsert_is_limited_with_parameters_it_can_take(pg: Database) -> None:
    upsert = insert(Counter)
    statement = upsert.on_conflict_do_update(index_elements=["id"], set_={"n": upsert.excluded.n})
    with UnitOfWork(pg, actor="me") as uow:
        uow.session.execute(statement, [{"id": 1, "n": 1}, {"id": 2, "n": 2}])
    with UnitOfWork(pg, actor="other") as uow:
        uow.session.execute(statement, [{"id": 2, "n": 5}, {"id": 3, "n": 3}])
    assert counter_2_entries(pg) == [
        ("create", "me", {"id": 2, "n": 2}),
        ("update", "other", {"n": {"old": 2, "new": 5}}),
    ]
