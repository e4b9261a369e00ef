"""A DELETE (a statement through a session, or a flush) whose ON DELETE CASCADE reaches
audited rows, racing another transaction on PostgreSQL under READ COMMITTED: every audited row
it cascades to is recorded. The parent rows are locked before their dependents are read, so a
child that another transaction inserts on one of them waits for this transaction (and then
finds its parent gone); the statement is limited to the parents locked, so a parent that
another transaction makes match its WHERE in between (and fills with children) is left
alone. An ORM bulk UPDATE by primary key of a key an ON UPDATE CASCADE carries to audited rows
fails when a key it names was not there to lock."""

from __future__ import annotations

import threading
import time
import typing
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm.exc import StaleDataError

from dalkit import AsyncDatabase, AsyncUnitOfWork, Database, ForeignKeyViolationError, UnitOfWork
from dalkit.audit import history

from .cascade_models import Book, CascadeBase, Rack, Shelf, Slot
from .test_concurrent_writers import after_the_locked_read_of

WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)
FRESH_ACTIVITY = "SELECT pg_stat_clear_snapshot()"


def shelves_and_books(db: Database) -> None:
    """Shelves 1 and 2, with books 1 and 2 on them."""
    db.create_all(CascadeBase.metadata)
    with UnitOfWork(db, actor="setup") as uow:
        uow.session.add_all([Shelf(id=1), Shelf(id=2)])
        uow.session.flush()
        uow.session.add_all([Book(id=1, shelf_id=1, title="a"), Book(id=2, shelf_id=2, title="b")])


def interlope_at_the_delete(
    engine: sa.Engine, db: Database, interlope: Callable[[], None]
) -> list[threading.Thread]:
    """Run ``interlope`` in another transaction once, as the DELETE of shelves is sent, until it
    has committed or waits for a lock this transaction holds; returns its thread, once run."""
    done = threading.Event()
    started: list[threading.Thread] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM FK_SHELVES") and not done.is_set():
            done.set()
            other = threading.Thread(target=interlope)
            other.start()
            started.append(other)
            deadline = time.monotonic() + 30
            while other.is_alive() and time.monotonic() < deadline:
                db.sql(FRESH_ACTIVITY)
                if db.sql(WAITING_FOR_A_LOCK)[0]["count"]:
                    break
                time.sleep(0.02)

    event.listen(engine, "before_cursor_execute", before)
    return started


def state(db: Database) -> tuple[list[int], list[int], dict[int, list[tuple[str, str | None]]]]:
    """The shelves and books left, and the log of books 1, 2 and 9: (action, actor)."""
    with db.session() as session:
        shelves = list(session.scalars(sa.select(Shelf.id).order_by(Shelf.id)))
        books = list(session.scalars(sa.select(Book.id).order_by(Book.id)))
        trails = {i: [(e.action, e.actor_id) for e in history(session, Book, i)] for i in (1, 2, 9)}
    return shelves, books, trails


def a_book_on_shelf_1(db: Database, failures: list[Exception]) -> Callable[[], None]:
    def interlope() -> None:
        try:
            with UnitOfWork(db, actor="other") as uow:
                uow.session.add(Book(id=9, shelf_id=1, title="new"))
        except ForeignKeyViolationError as exc:
            failures.append(exc)

    return interlope


def a_new_shelf_with_a_book(db: Database) -> Callable[[], None]:
    def interlope() -> None:
        with UnitOfWork(db, actor="other") as uow:
            uow.session.add(Shelf(id=5))
            uow.session.flush()
            uow.session.add(Book(id=9, shelf_id=5, title="new"))

    return interlope


SETUP, ME, OTHER = ("create", "setup"), ("delete", "me"), ("create", "other")
# the book inserted on shelf 1 waited for the DELETE's transaction, then found shelf 1 gone
CHILD_WAITED = ([2], [2], {1: [SETUP, ME], 2: [SETUP], 9: []})
# shelf 5 matched only after the shelves were locked: the DELETE leaves it, and its book, alone
PARENT_LEFT = ([1, 5], [1, 9], {1: [SETUP], 2: [SETUP, ME], 9: [OTHER]})


@pytest.fixture
def pg(database: Database) -> Database:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    shelves_and_books(database)
    return database


@pytest.fixture
def pg_async(async_database: AsyncDatabase) -> Iterator[tuple[AsyncDatabase, Database]]:
    """The async database, and a sync one on the same PostgreSQL database for the other
    transaction and the checks."""
    if async_database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    url = async_database.engine.url.set(drivername="postgresql+psycopg")
    other = Database(url.render_as_string(hide_password=False))
    try:
        shelves_and_books(other)
        yield async_database, other
    finally:
        other.dispose()


@pytest.mark.parametrize("flush", [False, True])
def test_a_child_inserted_as_a_cascading_delete_runs_is_not_deleted_unrecorded(
    pg: Database, flush: bool
) -> None:
    failures: list[Exception] = []
    started = interlope_at_the_delete(pg.engine, pg, a_book_on_shelf_1(pg, failures))
    with UnitOfWork(pg, actor="me") as uow:
        if flush:
            uow.session.delete(uow.session.get_one(Shelf, 1))
        else:
            uow.session.execute(sa.delete(Shelf).where(Shelf.id == 1))
    started[0].join(timeout=30)  # the other transaction fails once this one commits
    assert len(failures) == 1
    assert state(pg) == CHILD_WAITED


async def test_a_child_inserted_as_a_cascading_delete_runs_is_not_deleted_unrecorded_async(
    pg_async: tuple[AsyncDatabase, Database],
) -> None:
    db, other = pg_async
    failures: list[Exception] = []
    started = interlope_at_the_delete(
        db.engine.sync_engine, other, a_book_on_shelf_1(other, failures)
    )
    async with AsyncUnitOfWork(db, actor="me") as uow:
        await uow.session.execute(sa.delete(Shelf).where(Shelf.id == 1))
    started[0].join(timeout=30)
    assert len(failures) == 1
    assert state(other) == CHILD_WAITED


@pytest.mark.parametrize("core", [False, True])
def test_a_parent_that_newly_matches_a_cascading_delete_is_left_alone(
    pg: Database, core: bool
) -> None:
    interlope_at_the_delete(pg.engine, pg, a_new_shelf_with_a_book(pg))
    table = typing.cast("sa.Table", Shelf.__table__)
    statement = sa.delete(table).where(table.c.id >= 2) if core else sa.delete(Shelf)
    with UnitOfWork(pg, actor="me") as uow:
        deleted = uow.session.execute(statement.where(Shelf.id >= 2) if not core else statement)
    assert deleted.rowcount == 1  # type: ignore[attr-defined]
    assert state(pg) == PARENT_LEFT


async def test_a_parent_that_newly_matches_a_cascading_delete_is_left_alone_async(
    pg_async: tuple[AsyncDatabase, Database],
) -> None:
    db, other = pg_async
    interlope_at_the_delete(db.engine.sync_engine, other, a_new_shelf_with_a_book(other))
    async with AsyncUnitOfWork(db, actor="me") as uow:
        await uow.session.execute(sa.delete(Shelf).where(Shelf.id >= 2))
    assert state(other) == PARENT_LEFT


def a_rack_inserted_after_the_racks_are_locked(engine: sa.Engine, other: Database) -> None:
    """Rack 1 (code A, slot 1 on it); once the racks are read ``FOR UPDATE``, another
    transaction commits rack 5 (code E) with slot 9 on it."""
    with UnitOfWork(other, actor="setup") as uow:
        uow.session.add(Rack(id=1, code="A"))
        uow.session.flush()
        uow.session.add(Slot(id=1, rack_code="A"))

    def interlope() -> None:
        with UnitOfWork(other, actor="other") as uow:
            uow.session.add(Rack(id=5, code="E"))
            uow.session.flush()
            uow.session.add(Slot(id=9, rack_code="E"))

    after_the_locked_read_of("fk_racks", engine, interlope)


def slots(db: Database) -> tuple[list[tuple[int, str]], dict[int, list[tuple[str, str | None]]]]:
    """The slots' racks, and the log of slots 1 and 9: (action, actor)."""
    with db.session() as session:
        found = session.execute(sa.select(Slot.id, Slot.rack_code).order_by(Slot.id))
        trails = {i: [(e.action, e.actor_id) for e in history(session, Slot, i)] for i in (1, 9)}
        return [(i, code) for i, code in found], trails


RENAMED = [{"id": 1, "code": "B"}, {"id": 5, "code": "Z"}]
# rack 5 was not there to lock: the update fails, slot 9 keeps code E, and nothing is unrecorded
RACK_5_UNTOUCHED = ([(1, "A"), (9, "E")], {1: [("create", "setup")], 9: [("create", "other")]})


def test_a_bulk_update_by_key_does_not_cascade_to_a_parent_inserted_after_its_lock(
    pg: Database,
) -> None:
    a_rack_inserted_after_the_racks_are_locked(pg.engine, pg)
    with pytest.raises(StaleDataError, match="expected to update 2 row"):
        with UnitOfWork(pg, actor="me") as uow:
            uow.session.execute(sa.update(Rack), RENAMED)
    assert slots(pg) == RACK_5_UNTOUCHED


async def test_a_bulk_update_by_key_does_not_cascade_to_a_parent_inserted_after_its_lock_async(
    pg_async: tuple[AsyncDatabase, Database],
) -> None:
    db, other = pg_async
    a_rack_inserted_after_the_racks_are_locked(db.engine.sync_engine, other)
    with pytest.raises(StaleDataError, match="expected to update 2 row"):
        async with AsyncUnitOfWork(db, actor="me") as uow:
            await uow.session.execute(sa.update(Rack), RENAMED)
    assert slots(other) == RACK_5_UNTOUCHED
